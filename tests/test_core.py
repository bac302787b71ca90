"""Each lifecycle of the core through its real collaborators: a database, the loopback
Salesforce and a recording notifier. Fast: no Slack, no web server, no browser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlmodel import select

from bot.domain import (
    AttemptProblem,
    DatabaseDown,
    Environment,
    Health,
    LinkStatus,
    LoginContext,
    LoginLinkProblem,
    MissingPermissions,
)
from bot.links.pending import PENDING_GRACE
from storage import repository as repo
from storage.models import AuditEvent, PendingToken
from tests.fakes import FakeSalesforce, SfUser
from tests.support import ADMIN, TEAM, DatabaseHold
from tests.support.core import CoreUnderTest as Core
from tests.support.core import authorize, core_for

ORG, USER = "00D000000000001AAA", "005000000000001AAA"


@pytest.fixture
def sf() -> Iterator[FakeSalesforce]:
    fake = FakeSalesforce("3MVG9-test-client-id", "test-client-secret-0123456789")
    with fake:
        fake.login_as = fake.add_user(ORG, USER, "vcc-api@acme.example")
        yield fake


def api_user(sf: FakeSalesforce) -> SfUser:
    assert sf.login_as is not None
    return sf.login_as


def run(database_url: str, sf: FakeSalesforce, test, **kw) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with core_for(database_url, sf, **kw) as core:
            await test(core)

    asyncio.run(main())


def pending_count(core: Core) -> int:
    return len(core.db.call(lambda s: list(s.exec(select(PendingToken)).all()), write=False))


# ---- LoginFlow -------------------------------------------------------------------------


def test_a_login_completes_once_and_leaves_nothing_pending(database_url, sf):
    async def test(core: Core) -> None:
        ctx = LoginContext(TEAM, ADMIN, "acme", Environment.PRODUCTION, "C1")
        started = await core.login.start(ctx)
        assert started.context == ctx and started.expires_in.total_seconds() == 600
        opened = await core.login.open(started.url.rsplit("/", 1)[1], None)
        callback = authorize(opened)
        result = await core.login.complete(callback)
        assert result.account.status == LinkStatus.LINKED and not result.relinked
        assert sf.live_refresh_tokens(api_user(sf)) == sf.issued
        assert pending_count(core) == 0
        assert [r.account.account_id for r in core.notifier.of("linked")] == ["acme"]
        with pytest.raises(LoginLinkProblem) as used:
            await core.login.complete(callback)
        assert used.value.problem == AttemptProblem.USED

    run(database_url, sf, test)


def test_a_refused_link_revokes_its_token_and_records_why(database_url, sf):
    api_user(sf).permissions["PermissionsEditTask"] = False

    async def test(core: Core) -> None:
        with pytest.raises(MissingPermissions):
            await core.link(sf)
        assert sf.issued and sf.issued[-1] in sf.revoked
        assert sf.live_refresh_tokens(api_user(sf)) == []
        assert pending_count(core) == 0
        refused = core.db.call(
            lambda s: [e.detail for e in s.exec(select(AuditEvent)) if e.event == "link_refused"],
            write=False,
        )
        assert refused == ["missing required permissions: Edit Tasks"]
        assert isinstance(core.notifier.of("link_failed")[0], MissingPermissions)

    run(database_url, sf, test)


# ---- PendingTokens -----------------------------------------------------------------------


def test_custody_revokes_a_token_whose_link_fails_and_forgets_it(database_url, sf):
    async def test(core: Core) -> None:
        await core.link(sf)
        token = sf.issued[-1]
        with pytest.raises(RuntimeError):
            async with core.pending.custody(
                host=sf.url, token=token, team_id=TEAM, account_id="acme"
            ):
                assert pending_count(core) == 1  # recorded before anything else
                raise RuntimeError("the link failed")
        assert token in sf.revoked and pending_count(core) == 0

    run(database_url, sf, test)


def test_custody_revokes_at_once_when_the_database_cannot_record_the_token(database_url, sf):
    async def test(core: Core) -> None:
        await core.link(sf)
        token = sf.issued[-1]
        hold = DatabaseHold(database_url)
        await asyncio.to_thread(hold.take)
        try:
            with pytest.raises(DatabaseDown):
                async with core.pending.custody(
                    host=sf.url, token=token, team_id=TEAM, account_id="acme"
                ):
                    raise AssertionError("custody must not be given without a record")
        finally:
            await asyncio.to_thread(hold.release)
        assert token in sf.revoked and pending_count(core) == 0

    run(database_url, sf, test, db_timeout=1.0)


def test_the_sweep_revokes_only_tokens_older_than_the_grace(database_url, sf):
    async def test(core: Core) -> None:
        await core.link(sf)
        token = sf.issued[-1]
        core.leave_pending(sf)
        assert await core.pending.sweep() == 0  # maybe a link still being completed
        core.clock.advance(PENDING_GRACE.total_seconds() + 1)
        assert await core.pending.sweep() == 1
        assert token in sf.revoked and pending_count(core) == 0

    run(database_url, sf, test)


# ---- LinkHealth ----------------------------------------------------------------------------


def refreshes(sf: FakeSalesforce) -> int:
    return sum(1 for r in list(sf.requests) if r.form.get("grant_type") == "refresh_token")


def test_a_recent_check_is_reused_and_says_when_it_was_made(database_url, sf):
    async def test(core: Core) -> None:
        await core.link(sf)
        linked_at = core.clock()
        core.clock.advance(10)
        reused = await core.health.check(TEAM, "acme")
        assert reused.reused and reused.checked_at == linked_at
        assert reused.health == Health.HEALTHY and refreshes(sf) == 0
        core.clock.advance(30)
        fresh = await core.health.check(TEAM, "acme")
        assert not fresh.reused and fresh.checked_at == core.clock() and refreshes(sf) == 1

    run(database_url, sf, test)


def test_concurrent_askers_share_one_check_and_one_transition(database_url, sf):
    async def test(core: Core) -> None:
        await core.link(sf)
        sf.revoke_user_tokens(api_user(sf))
        sf.slow_next(lambda r: r.form.get("grant_type") == "refresh_token", 0.5)
        checks = await asyncio.gather(
            *(core.health.check(TEAM, "acme", actor=f"U{n}") for n in range(10))
        )
        assert {c.health for c in checks} == {Health.BROKEN}
        assert refreshes(sf) == 1
        assert [a.account_id for a in core.notifier.of("broken")] == ["acme"]
        again = await core.health.check(TEAM, "acme", reuse=False)
        assert again.health == Health.BROKEN and len(core.notifier.of("broken")) == 1

    run(database_url, sf, test, reuse_seconds=0)


def test_a_check_outlives_a_person_who_stops_waiting(database_url, sf):
    sf.rotate_refresh_tokens = True

    async def test(core: Core) -> None:
        await core.link(sf)
        sf.slow_next(lambda r: r.path.startswith("/id/"), 8.0)
        impatient = await core.health.check(TEAM, "acme", reuse=False)
        assert impatient.health == Health.UNKNOWN  # the person was told "not in time"
        await core.health.idle()  # ...while the check went on to the end
        row = core.db.call(lambda s: repo.get_account(s, team_id=TEAM, account_id="acme"))
        assert row.check_lease_until is None and row.health == Health.HEALTHY
        assert len(sf.live_refresh_tokens(api_user(sf))) == 1

    run(database_url, sf, test)


# ---- LinkService ---------------------------------------------------------------------------


def test_unlink_revokes_and_withdraws_the_accounts_login_links(database_url, sf):
    async def test(core: Core) -> None:
        await core.link(sf)
        pending_login = await core.login.start(
            LoginContext(TEAM, ADMIN, "acme", Environment.PRODUCTION, "C1")
        )
        view = await core.links.unlink(TEAM, "acme", ADMIN)
        assert view.status == LinkStatus.UNLINKED
        assert sf.live_refresh_tokens(api_user(sf)) == []
        with pytest.raises(LoginLinkProblem) as withdrawn:
            await core.login.open(pending_login.url.rsplit("/", 1)[1], None)
        assert withdrawn.value.problem == AttemptProblem.WITHDRAWN

    run(database_url, sf, test)


def test_the_account_view_counts_its_api_users_links(database_url, sf):
    sf.max_approvals = 10  # about the bot's own count, not Salesforce's eviction

    async def test(core: Core) -> None:
        for n in range(1, 6):
            await core.link(sf, f"acct-{n}")
        await core.background.idle(10)
        view = await core.links.account(TEAM, "acct-3")
        assert view.api_user_links == 5 and view.api_user_full

    run(database_url, sf, test)
