"""Several replicas behind a load balancer, on one PostgreSQL database.

Each replica is a real `vcc-bot serve` process (tests/support/processes.py); a small TCP
balancer on the public port spreads connections over them, as the one in front of a
production deployment does. Slack's requests are signed, the admin's browser keeps its
cookies, Salesforce and Slack are the loopback fakes. To stop a replica at an exact step
of a flow, the fake Salesforce holds the request the bot makes at that step.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, create_engine, text, update

from storage.models import PendingToken, utcnow
from tests.fakes import FakeSalesforce, FakeSlack, Recorded, SfUser
from tests.support import (
    ADMIN,
    BOT_TOKEN,
    CHANNEL,
    CLIENT_ID,
    CLIENT_SECRET,
    SIGNING_SECRET,
    Salesforce,
    SlackClient,
    link,
    open_login,
    start_link,
    text_of,
    wait_until,
)
from tests.support.database import account_row, pending_count
from tests.support.processes import Balancer, Fleet, Replica

# Replicas share one database: SQLite is one file on one machine, so these run on
# PostgreSQL only, as a deployment of several replicas does.
skip_without_postgresql = pytest.mark.skipif(
    not os.environ.get("TEST_DATABASE_URL"),
    reason="several replicas share one PostgreSQL database: set TEST_DATABASE_URL="
    "postgresql://postgres@127.0.0.1:5432/test (any PostgreSQL URL) to run them",
)
SHUTDOWN_TIMEOUT = 5.0  # SHUTDOWN_TIMEOUT given to every replica
IDLE_EXIT_SECONDS = 2.0  # a replica with nothing in flight is gone this soon after SIGTERM
LINKED_PAGE = "Linked — you can close this window"


def postgresql(test: Callable[..., Any]) -> Callable[..., Any]:
    """Run on conftest's fresh PostgreSQL database only (skipped without one)."""
    on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    return skip_without_postgresql(on_postgresql(test))


# ---- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def fleet(
    database_url: str,
    slack: FakeSlack,
    salesforce: Salesforce,
    public_port: int,
    tmp_path: Any,
) -> Iterator[Fleet]:
    """The replicas of one test: one database, one key, one public URL (the balancer's)."""
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "SALESFORCE_CLIENT_ID": CLIENT_ID,
        "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET,
        "SALESFORCE_PRODUCTION_URL": salesforce.production.url,
        "SALESFORCE_SANDBOX_URL": salesforce.sandbox.url,
        "PUBLIC_URL": f"http://127.0.0.1:{public_port}",
        "DATABASE_URL": database_url,
        "VCC_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "VCC_CHECK_REUSE": "0",  # /vcc status always asks Salesforce
        "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    }
    fleet = Fleet(env, tmp_path)
    try:
        yield fleet
    finally:
        # A held request would keep a replica's graceful shutdown waiting: let it go first.
        salesforce.production.release_holds()
        fleet.close()
        print(fleet.logs())  # shown with a failing test's report only


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    """The admin's browser: keeps cookies, follows no redirect by itself, and opens a
    connection per request, so that the balancer routes each request on its own."""
    with httpx.Client(timeout=10, follow_redirects=False, headers={"Connection": "close"}) as b:
        yield b


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """The replicas' database, opened on its own (read, and once aged, by the test)."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def slack_to(target: Balancer | Replica, slack: FakeSlack) -> Iterator[SlackClient]:
    """Slack sending its signed requests to `target`, one connection per request."""
    http = httpx.Client(timeout=10, headers={"Connection": "close"})
    try:
        yield SlackClient(target, slack, http=http)  # type: ignore[arg-type]  # has .url
    finally:
        http.close()


def status_of(client: SlackClient, account: str) -> str:
    """`/vcc status <account>`: its one answer, after the live check."""
    return text_of(client.replies(client.command(f"status {account}"), timeout=10)[-1])


def is_refresh(req: Recorded) -> bool:
    return req.path == "/services/oauth2/token" and req.form.get("grant_type") == "refresh_token"


def refreshes(sf: FakeSalesforce, token: str) -> int:
    return sum(1 for r in list(sf.requests) if is_refresh(r) and r.form["refresh_token"] == token)


def identity_of(user: SfUser) -> Callable[[Recorded], bool]:
    """Matches the identity call for this API user: the bot's first call after custody."""
    return lambda req: req.path.startswith(f"/id/{user.org_id}/")


def linked_dms(slack: FakeSlack, account: str) -> list[dict[str, Any]]:
    return [m for m in slack.dms_to(ADMIN) if "Linked." in text_of(m) and account in text_of(m)]


def linked_notices(slack: FakeSlack, account: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages_to(CHANNEL) if account in text_of(m)]


def follow_in_thread(browser: httpx.Client, url: str) -> tuple[threading.Thread, list[Any]]:
    """GET url in a thread (it is about to be held); the answer, or the error, lands in
    the list."""
    outcome: list[Any] = []

    def follow() -> None:
        try:
            outcome.append(browser.get(url, timeout=30))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread, outcome


# ---- 1. a login started through one replica completes through the other -----------------


@postgresql
def test_a_login_started_through_one_replica_completes_through_the_other(
    fleet, public_port, slack, salesforce, browser
):
    a, b = fleet.start("a", "b")
    with Balancer(public_port, [a, b]) as balancer, slack_to(balancer, slack) as client:
        with balancer.steer(a):  # the command and the click
            start = start_link(client, "acme")
        assert start.login_url.startswith(f"{balancer.url}/salesforce/login/")
        with balancer.steer(b):  # the login page and its button
            to_salesforce = open_login(browser, start.login_url)
        assert to_salesforce.status_code == 303, to_salesforce.text
        at_salesforce = browser.get(to_salesforce.headers["location"])
        assert at_salesforce.status_code == 302, at_salesforce.text
        callback = at_salesforce.headers["location"]
        assert callback.startswith(f"{balancer.url}/salesforce/callback?")
        with balancer.steer(a):  # Salesforce's redirect back, to the first replica again
            page = browser.get(callback)
        assert page.status_code == 200, page.text
        assert LINKED_PAGE in page.text
        assert balancer.routed == ["a", "a", "b", "b", "a"]  # the path really crossed

        # Told once: the admin's DM and the channel's notice were sent before the page.
        assert len(linked_dms(slack, "acme")) == 1
        assert len(linked_notices(slack, "acme")) == 1
        with balancer.steer(b):
            body = status_of(client, "acme")
        assert "is *Linked*" in body and "the link works" in body
    live = salesforce.production.live_refresh_tokens(salesforce.api_user)
    assert len(live) == 1  # one login, one approval


# ---- 2. the health monitor checks each link once per interval across replicas -------------

INTERVAL = 2.0  # VCC_HEALTH_INTERVAL of the monitoring replicas (their tick, too)


@postgresql
def test_the_monitor_checks_each_link_once_per_interval_across_replicas(
    fleet, public_port, slack, salesforce, browser, db
):
    sf = salesforce.production
    users = {
        f"acct-{n}": sf.add_user(
            f"00D00000000001{n}AAA", f"00500000000001{n}AAA", f"api@{n}.example"
        )
        for n in (1, 2, 3)
    }
    # Linked through one replica whose monitor is an hour away, so that no link has been
    # checked when the monitoring replicas start: every link is due to both.
    linker = fleet.launch("linker", port=public_port, VCC_HEALTH_INTERVAL="3600").wait_ready()
    with slack_to(linker, slack) as client:
        for account, user in users.items():
            sf.login_as = user
            assert link(client, browser, account).status_code == 200
    linker.stop()
    token_of = {account: sf.live_refresh_tokens(user)[0] for account, user in users.items()}
    arrivals: list[tuple[float, Recorded]] = []
    sf.on_request = lambda req: arrivals.append((time.monotonic(), req))

    def checks(token: str, since: float = 0.0) -> list[float]:
        """When each refresh of this link's token arrived at Salesforce."""
        return [
            at
            for at, req in list(arrivals)
            if at > since and is_refresh(req) and req.form["refresh_token"] == token
        ]

    # Both monitors are made to read the same due links at the same moment: another client
    # locks the table until each replica's pass waits on it, then lets both go at once.
    # Each link is then claimed by exactly one of them.
    with table_locked(db, "vcc_account"):
        fleet.start("a", "b", VCC_HEALTH_INTERVAL=str(int(INTERVAL)))
        wait_until(lambda: due_reads_waiting(db) >= 2, INTERVAL * 4, "both monitors' passes")
    released = time.monotonic()

    # The race, then two more intervals.
    sf.wait_for(
        lambda: all(len(checks(token, released)) >= 3 for token in token_of.values()),
        timeout=INTERVAL * 6,
    )
    sf.on_request = None
    for account, token in token_of.items():
        gaps = [later - earlier for earlier, later in pairwise(checks(token))]
        # Never twice in one interval (both replicas checking it), never skipped for long.
        assert min(gaps) >= INTERVAL * 0.75, (account, gaps)
        assert max(gaps) <= INTERVAL * 2.5, (account, gaps)
    assert sf.errors == []


@contextmanager
def table_locked(db: Engine, table: str) -> Iterator[None]:
    """Another client holds `table` so that nobody can read it, until the block ends."""
    with db.connect() as conn:
        conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()


def due_reads_waiting(db: Engine) -> int:
    """Monitor passes (their read of the links due for a check) waiting for a lock."""
    with db.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query ILIKE '%next_check_at%'"
            )
        ).scalar_one()


# ---- 3. a replica killed mid-link loses nothing and leaves no live token --------------------


@postgresql
def test_a_replica_killed_mid_link_leaves_no_live_token_and_the_link_can_be_redone(
    fleet, public_port, slack, salesforce, browser, db
):
    sf = salesforce.production
    acme_user = salesforce.api_user
    other_user = sf.add_user("00D000000000009AAA", "005000000000009AAA", "api@other.example")
    a, b = fleet.start("a", "b", VCC_HEALTH_INTERVAL="1")
    with Balancer(public_port, [a, b]) as balancer, slack_to(balancer, slack) as client:
        # A link that completes: its checks show the survivor's monitor passing.
        sf.login_as = other_user
        assert link(client, browser, "other").status_code == 200
        other_token = sf.live_refresh_tokens(other_user)[0]

        sf.login_as = acme_user
        with balancer.steer(a):
            start = start_link(client, "acme")
            to_salesforce = open_login(browser, start.login_url)
        at_salesforce = browser.get(to_salesforce.headers["location"])
        assert at_salesforce.status_code == 302
        # The identity call comes after the code exchange and the token's custody, before
        # the commit of the link: replica a is killed while it waits for the answer.
        held = sf.hold_next(identity_of(acme_user))
        with balancer.steer(a):
            thread, outcome = follow_in_thread(browser, at_salesforce.headers["location"])
            held.wait_reached(timeout=10)
        token = sf.issued[-1]
        assert pending_count(db) == 1  # custody: recorded before the identity call
        a.kill()
        held.release()
        thread.join(timeout=10)
        assert isinstance(outcome[0], httpx.HTTPError), outcome  # the link never finished
        assert token in sf.live_refresh_tokens(acme_user) and token not in sf.revoked
        row = account_row(db, "acme")
        assert row is None or row.status != "Linked"

        # Young, the pending token may be a link another replica is completing: the
        # survivor's sweeps leave it alone. Two of its monitor passes (seen as checks of
        # "other") mean at least one whole sweep ran after the kill.
        seen = refreshes(sf, other_token)
        sf.wait_for(lambda: refreshes(sf, other_token) >= seen + 2, timeout=10)
        assert token not in sf.revoked and pending_count(db) == 1

        # Past PENDING_GRACE (5 minutes; aged here instead of waited for) it can belong to
        # no link in progress: the survivor's next sweep revokes it.
        with db.begin() as conn:
            conn.execute(update(PendingToken).values(created_at=utcnow() - timedelta(hours=1)))
        sf.wait_for(lambda: token in sf.revoked, timeout=10)
        wait_until(lambda: pending_count(db) == 0, 10, "the pending row to be deleted")
        assert sf.live_refresh_tokens(acme_user) == []
        assert sf.live_refresh_tokens(other_user) == [other_token]  # only that token
        assert "is *Unlinked*" in status_of(client, "acme")  # not half-linked

        # The admin links again; the balancer sends everything to the survivor.
        routed_before = len(balancer.routed)
        assert link(client, browser, "acme").status_code == 200
        body = status_of(client, "acme")
        assert "is *Linked*" in body and "the link works" in body
        assert set(balancer.routed[routed_before:]) == {"b"}
    assert len(sf.live_refresh_tokens(acme_user)) == 1
    assert len(linked_dms(slack, "acme")) == 1  # the second login's, only
    log = b.log()
    assert "revoked 1 token(s) left pending by an interrupted link" in log
    assert token not in log


# ---- 4. graceful shutdown -------------------------------------------------------------------


@postgresql
def test_sigterm_refuses_new_connections_finishes_the_callback_in_flight_and_exits_0(
    fleet, public_port, slack, salesforce, browser, db
):
    sf = salesforce.production
    # Replica a serves the public URL itself: no balancer, so a refused connection is a.
    a = fleet.launch("a", port=public_port)
    idle = fleet.launch("idle")
    for replica in (a, idle):
        replica.wait_ready()

    # Nothing in flight: gone at once, and cleanly.
    sent = idle.terminate()
    assert idle.wait_exit(IDLE_EXIT_SECONDS + 1) == 0, idle.log()
    assert time.monotonic() - sent <= IDLE_EXIT_SECONDS, idle.log()

    with slack_to(a, slack) as client:
        start = start_link(client, "acme")
    to_salesforce = open_login(browser, start.login_url)
    at_salesforce = browser.get(to_salesforce.headers["location"])
    assert at_salesforce.status_code == 302
    held = sf.hold_next(identity_of(salesforce.api_user))
    thread, outcome = follow_in_thread(browser, at_salesforce.headers["location"])
    held.wait_reached(timeout=10)

    sent = a.terminate()
    wait_until(lambda: not a.accepts_connections(), 5, "a to stop accepting connections")
    assert a.running and thread.is_alive()  # still finishing the callback
    held.release()
    thread.join(timeout=SHUTDOWN_TIMEOUT + 5)
    assert outcome and isinstance(outcome[0], httpx.Response), outcome
    assert outcome[0].status_code == 200 and LINKED_PAGE in outcome[0].text
    # Requests get SHUTDOWN_TIMEOUT, the work they started as long again: the bound.
    left = 2 * SHUTDOWN_TIMEOUT + 2 - (time.monotonic() - sent)
    assert a.wait_exit(max(left, 0.1)) == 0, a.log()

    row = account_row(db, "acme")
    assert row is not None and row.status == "Linked"
    assert pending_count(db) == 0
    assert len(linked_dms(slack, "acme")) == 1
    assert len(sf.live_refresh_tokens(salesforce.api_user)) == 1
    assert "timeout graceful shutdown exceeded" not in a.log()


# ---- the fake's hold, which the tests above rely on ----------------------------------------


def test_the_fake_holds_a_matching_request_until_released(salesforce):
    sf = salesforce.production
    held = sf.hold_next(lambda req: req.path == "/services/data/")
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(httpx.get(f"{sf.url}/services/data/", timeout=10))
    )
    thread.start()
    assert held.wait_reached(timeout=5).path == "/services/data/"
    # Other requests are not held, and the held one is not answered yet.
    assert httpx.get(f"{sf.url}/services/data", timeout=5).status_code == 200
    assert answers == [] and thread.is_alive()
    held.release()
    thread.join(timeout=5)
    assert [a.status_code for a in answers] == [200]
    # Held once: the next matching request is answered at once.
    assert httpx.get(f"{sf.url}/services/data/", timeout=5).status_code == 200
