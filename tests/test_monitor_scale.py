"""The health monitor at scale: a bounded number of checks at once, each link checked once
per pass however many replicas pass together, and a Salesforce that does not answer
breaks no link.

Replicas are composed as `vcc-bot serve` composes them (bot.cli.build), on one database
and one encryption key; the links are bulk-seeded (tests/benchmarks/monitor_pass.py) and
the fake Salesforce answers every call after a delay and counts the calls under way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from sqlmodel import select

from bot.cli import Runtime, build
from bot.domain import AuditKind, Health
from bot.monitor import MONITOR_CONCURRENCY, HealthMonitor
from storage import repository as repo
from storage.models import AuditEvent, VccAccount, utcnow
from tests.benchmarks.monitor_pass import (
    ScaleSalesforce,
    grant_links,
    refresh_token,
    replica_settings,
    seed_links,
)
from tests.fakes import FakeSlack
from tests.support import CHANNEL, CLIENT_ID, CLIENT_SECRET

CALLS_PER_CHECK = 3  # refresh, identity, permissions: one after another
INTERVAL = timedelta(seconds=3600)  # replica_settings' health interval

Replicas = Callable[[], Runtime]


@pytest.fixture
def fake() -> Iterator[ScaleSalesforce]:
    with ScaleSalesforce(CLIENT_ID, CLIENT_SECRET, name="production") as sf:
        yield sf


@pytest.fixture
def replicas(database_url: str, fake: ScaleSalesforce, slack: FakeSlack) -> Iterator[Replicas]:
    """Builds replicas of one deployment: the same database, the same key."""
    key = Fernet.generate_key().decode()
    built: list[Runtime] = []

    def replica() -> Runtime:
        runtime = build(replica_settings(database_url, fake.url, key, slack_api_url=slack.api_url))
        built.append(runtime)
        return runtime

    yield replica
    for runtime in built:
        runtime.db.dispose()


def linked(fake: ScaleSalesforce, runtime: Runtime, links: int) -> None:
    grant_links(fake, links)
    seed_links(runtime.db, runtime.cipher, fake.url, links)


def passes(*monitors: tuple[Runtime, HealthMonitor | None]) -> tuple[list[int], float]:
    """One pass of each monitor, all at once; how many each checked, and the seconds."""

    async def main() -> tuple[list[int], float]:
        started = time.perf_counter()
        try:
            checked = await asyncio.gather(
                *((monitor or runtime.monitor).run_once() for runtime, monitor in monitors)
            )
            return list(checked), time.perf_counter() - started
        finally:
            for runtime, _ in monitors:
                await runtime.aclose()

    return asyncio.run(main())


def rows(runtime: Runtime) -> list[VccAccount]:
    return runtime.db.call(lambda s: list(s.exec(select(VccAccount)).all()), write=False)


def broken_events(runtime: Runtime) -> list[AuditEvent]:
    return runtime.db.call(
        lambda s: list(
            s.exec(select(AuditEvent).where(AuditEvent.event == AuditKind.BROKEN.value)).all()
        ),
        write=False,
    )


def test_a_pass_has_at_most_its_bound_of_salesforce_calls_under_way(fake, replicas):
    fake.delay = 0.2
    runtime = replicas()
    links = MONITOR_CONCURRENCY * 5
    linked(fake, runtime, links)

    checked, _ = passes((runtime, None))

    assert checked == [links]
    # Reached, and never passed: the bound is what limits the pass.
    assert fake.max_in_flight == MONITOR_CONCURRENCY
    assert fake.errors == []


def test_a_pass_checks_each_link_once_in_a_time_only_concurrency_explains(fake, replicas):
    fake.delay = 0.2
    runtime = replicas()
    links = 300
    linked(fake, runtime, links)
    started = utcnow()

    checked, seconds = passes((runtime, None))

    assert checked == [links]
    assert fake.refreshes() == {refresh_token(i): 1 for i in range(links)}
    one_at_a_time = links * CALLS_PER_CHECK * fake.delay  # 180 s
    ideal = one_at_a_time / MONITOR_CONCURRENCY  # 7.5 s
    assert seconds < 3 * ideal, f"{seconds:.1f} s for {links} links"
    after = rows(runtime)
    assert all(r.health == Health.HEALTHY and r.health_checked_at >= started for r in after)
    assert all(r.check_lease_until is None for r in after)
    # Nothing is due again within the interval.
    assert passes((replicas(), None))[0] == [0]


def test_replicas_passing_together_check_each_link_once_in_all(fake, replicas):
    fake.delay = 0.05
    first, second = replicas(), replicas()
    links = 200
    linked(fake, first, links)

    checked, _ = passes((first, None), (second, None))

    assert sum(checked) == links
    assert fake.refreshes() == {refresh_token(i): 1 for i in range(links)}
    assert fake.max_in_flight <= 2 * MONITOR_CONCURRENCY


@pytest.mark.parametrize("outage", ["503", "refused"])
def test_a_pass_while_salesforce_is_down_marks_no_link_broken(outage, fake, replicas, slack):
    fake.delay = 0.05
    runtime = replicas()
    links = 200
    linked(fake, runtime, links)
    if outage == "503":
        fake.fail_next("/services/oauth2/token", 503, count=links)
    else:
        fake.stop()  # its port now refuses connections

    checked, seconds = passes((runtime, None))

    assert checked == [links]  # each tried once, concurrently
    assert seconds < links * fake.delay
    after = rows(runtime)
    assert all(r.health == Health.HEALTHY and r.health_reason is None for r in after)
    assert broken_events(runtime) == []
    assert slack.messages_to(CHANNEL) == []
    # Each claim was released; the schedule it moved stays moved, so a Salesforce that is
    # down is asked again one interval later, not at every tick meanwhile.
    assert all(r.check_lease_until is None for r in after)
    now = utcnow()
    assert all(now < r.next_check_at <= now + INTERVAL for r in after)
    due_later = runtime.db.call(
        lambda s: repo.due_for_check(s, now=now + INTERVAL, limit=links + 1), write=False
    )
    assert len(due_later) == links

    if outage == "503":  # Salesforce is back: the next interval's pass finds them healthy
        later = replicas()
        monitor = HealthMonitor(
            store=later.core.store,
            health=later.core.health,
            pending=later.core.pending,
            interval_seconds=INTERVAL.total_seconds(),
            clock=lambda: utcnow() + INTERVAL,
        )
        assert passes((later, monitor))[0] == [links]
        assert fake.refreshes() == {refresh_token(i): 2 for i in range(links)}
        assert all(r.health == Health.HEALTHY for r in rows(later))
        assert broken_events(later) == []
