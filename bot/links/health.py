"""Link health: is a link alive? One live check per account at a time, across replicas.

A live check refreshes the token, then reads the identity and the permissions. Concurrent
askers in one process share one check; across replicas the check is claimed in the
database (the lease on the account's row, also taken by the monitor), and a replica that
loses the claim waits for the winner's recorded result. Transitions (broken, recovered)
are decided from that single result, so they are announced once.

A check is never cancelled midway: a person's wait is bounded, the check itself goes on
and records what it found. A rotated refresh token is stored the moment it arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlmodel import Session

from bot import messages
from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import (
    AccountView,
    AuditKind,
    DatabaseDown,
    ForgedResponse,
    Health,
    HealthCheck,
    LinkStatus,
    LoginContext,
    Notifier,
    SalesforceDown,
    SalesforceLoginFailed,
)
from bot.links.common import MONITOR, Hosts, account_view, hash_secret
from bot.links.errors import Store, salesforce
from bot.links.pending import PendingTokens
from bot.salesforce import CONNECTED_APP_ERRORS, Identity, Permissions, SalesforceClient
from storage import repository as repo
from storage.models import VccAccount

log = logging.getLogger(__name__)

# A check younger than this is reused: Salesforce API calls count against the org's limits.
REUSE_FOR = timedelta(seconds=30)
# How long a claimed check may run before another replica may take it over.
LEASE = timedelta(seconds=60)
# A person waits this long for a live check; the check itself goes on.
WAIT_SECONDS = 6.0
# Live checks one person may start per window (Salesforce's API limits are the org's).
RATE_LIMIT = 5
RATE_WINDOW = timedelta(minutes=1)
# The refusals that are about the link itself: its grant (revoked, expired, its user
# inactive or restricted; RFC 6749 section 5.2 "invalid_grant"), its org, a fresh access
# token refused, or API access taken from the user or org. Any other refusal (the
# connected app's own errors, rate limits, an answer Salesforce does not document, an API
# version the org does not serve) says nothing about the link: "could not check".
_ABOUT_THE_LINK = frozenset(
    {
        "invalid_grant",
        "inactive_user",
        "inactive_org",
        "identity_refused",
        "INVALID_SESSION_ID",
        "API_DISABLED_FOR_ORG",
        "API_CURRENTLY_DISABLED",
    }
)
# A connected-app error is told once a day per error: to operators in the log, and to
# the admins who linked the accounts it stops being checked.
APP_ALERT_EVERY = timedelta(days=1)


def _revoked(refused: SalesforceLoginFailed) -> bool:
    """invalid_grant "expired access/refresh token": revoked, expired, or evicted."""
    description = refused.description.lower()
    return refused.error == "invalid_grant" and ("expired" in description or not description)


def transition(before: Health | None, after: Health) -> AuditKind | None:
    """The change worth recording and announcing: once per change, never for the same state."""
    if before is None or before == after:
        return None
    if after == Health.BROKEN:
        return AuditKind.BROKEN
    if after == Health.HEALTHY and before == Health.BROKEN:
        return AuditKind.RECOVERED
    return None


@dataclass(frozen=True)
class _Verdict:
    """What one live check found, before it is recorded."""

    health: Health
    reason: str | None
    token: str  # the encrypted token the verdict is about (rotated or not)
    warnings: list[str] | None = None


def judge(
    row: VccAccount, identity: Identity, permissions: Permissions
) -> tuple[Health, str | None]:
    """A working token's verdict: the right user, active, with the required permissions."""
    missing = permissions.missing_required()
    if not identity.active:
        return Health.BROKEN, messages.INACTIVE_USER
    if (identity.org_id, identity.user_id) != (row.org_id, row.sf_user_id):
        return Health.BROKEN, messages.OTHER_USER
    if missing:
        return Health.BROKEN, messages.lost_permissions(missing)
    return Health.HEALTHY, None


class LinkHealth:
    def __init__(
        self,
        *,
        store: Store,
        cipher: TokenCipher,
        salesforce: SalesforceClient,
        hosts: Hosts,
        pending: PendingTokens,
        notifier: Notifier,
        clock: Callable[[], datetime],
        interval: timedelta,
        wait_seconds: float = WAIT_SECONDS,
        reuse_for: timedelta = REUSE_FOR,
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._sf = salesforce
        self._hosts = hosts
        self._pending = pending
        self._notifier = notifier
        self._now = clock
        self._interval = interval
        self._wait = wait_seconds
        self._reuse_for = reuse_for
        self._inflight: dict[tuple[str, str], asyncio.Task[HealthCheck | None]] = {}

    # -- asking ------------------------------------------------------------------------

    async def check(
        self,
        team_id: str,
        account_id: str,
        *,
        actor: str = MONITOR,
        reuse: bool = True,
        wait: bool = True,
        revoked_reason: str | None = None,
        rated: bool | None = None,
        asked_at: datetime | None = None,
    ) -> HealthCheck:
        """Is the link alive? A recent result is reused; otherwise one live check runs.

        `asked_at`: when the person asked. A result found since then answers them, however
        young VCC_CHECK_REUSE is: askers queued behind others share the check those ran.

        `rated`: a person asked, so the check counts against their limit (by default,
        a reusing check by anyone but the monitor; the bot's own re-checks never count).

        With `wait`, a person waits at most a few seconds; the check goes on regardless.
        `revoked_reason` explains an invalid_grant when the caller knows its cause.
        """
        row = await self._store.read(
            partial(repo.get_account, team_id=team_id, account_id=account_id)
        )
        view = account_view(row, team_id=team_id, account_id=account_id)
        if row is None or view.status != LinkStatus.LINKED or not row.refresh_token_encrypted:
            return HealthCheck(view, Health.UNKNOWN, None)
        checked = row.health_checked_at
        recent = checked is not None and (
            self._now() - checked < self._reuse_for
            or (asked_at is not None and checked >= asked_at)
        )
        if reuse and recent:
            return HealthCheck(view, view.health, view.health_reason, checked, reused=True)
        key = (team_id, account_id)
        if not reuse and key in self._inflight:
            # A check that began before this question may have missed what prompted it.
            await asyncio.gather(asyncio.shield(self._inflight[key]), return_exceptions=True)
        task = self._shared(
            row,
            actor=actor,
            revoked_reason=revoked_reason,
            scheduled=False,
            rated=(reuse and actor != MONITOR) if rated is None else rated,
        )
        try:
            result = await asyncio.wait_for(asyncio.shield(task), self._wait if wait else None)
        except TimeoutError:
            return HealthCheck(view, Health.UNKNOWN, messages.NOT_IN_TIME)
        return result or await self._current(row)

    async def check_scheduled(self, row: VccAccount) -> HealthCheck | None:
        """The monitor's check of a due account, claimed once per interval across replicas.

        None when another check has it (here or in another replica): the monitor moves on.
        """
        if (row.team_id, row.account_id) in self._inflight:
            return None
        task = self._shared(row, actor=MONITOR, revoked_reason=None, scheduled=True)
        return await asyncio.shield(task)

    def _shared(
        self,
        row: VccAccount,
        *,
        actor: str,
        revoked_reason: str | None,
        scheduled: bool,
        rated: bool = False,
    ) -> asyncio.Task[HealthCheck | None]:
        """The check under way for this account, or a new one; created without awaiting
        anything, so concurrent askers in this process always find the same task."""
        key = (row.team_id, row.account_id)
        task = self._inflight.get(key)
        if task is None:
            work = self._claimed(row, actor, revoked_reason, scheduled)
            task = asyncio.create_task(self._rated(row, actor, work) if rated else work)
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return task

    def _forget(self, key: tuple[str, str], task: asyncio.Task[HealthCheck | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        # Everyone may have stopped waiting: a failure must still reach the log.
        if not task.cancelled() and task.exception() is not None:
            log.warning("a live check failed", exc_info=task.exception())

    async def idle(self, within: float = 15.0) -> None:
        """Wait for the checks under way, within bounds (at shutdown: a refresh is not cut
        midway; each Salesforce call has its own timeout)."""
        if self._inflight:
            await asyncio.wait(set(self._inflight.values()), timeout=within)

    # -- one check -----------------------------------------------------------------------

    async def _rated(
        self, row: VccAccount, actor: str, work: Coroutine[Any, Any, HealthCheck | None]
    ) -> HealthCheck | None:
        """Each live check costs the org three API calls: a person gets a bounded number."""
        allowed = await self._store.write(
            partial(
                repo.take_rate,
                key=f"check:{row.team_id}:{actor}",
                now=self._now(),
                window=RATE_WINDOW,
                limit=RATE_LIMIT,
            )
        )
        if allowed:
            return await work
        work.close()
        current = await self._current(row)
        return replace(current, reused=True, limited=True)

    async def _claimed(
        self, row: VccAccount, actor: str, revoked_reason: str | None, scheduled: bool
    ) -> HealthCheck | None:
        assert row.id is not None
        now = self._now()
        won = await self._store.write(
            partial(
                repo.claim_check,
                account_pk=row.id,
                now=now,
                lease_until=now + LEASE,
                # Only the monitor's checks move the schedule; a person's check does not.
                next_check_at=now + self._interval if scheduled else None,
                seen=row.next_check_at,
            )
        )
        if not won:
            # Scheduled: another replica has this interval's check. Asked: share its result.
            return None if scheduled else await self._result_of_other_check(row)
        try:
            verdict = await self._live(row, revoked_reason)
        except (SalesforceDown, SalesforceLoginFailed, ForgedResponse, DatabaseDown) as exc:
            result = await self._not_checked(row, exc)
            if isinstance(exc, SalesforceLoginFailed) and exc.error in CONNECTED_APP_ERRORS:
                await self._connected_app_refused(row, exc)
            return result
        if verdict is None:  # relinked or unlinked meanwhile
            return await self._current(row)
        return await self._record(row, verdict, actor=actor)

    async def _live(self, row: VccAccount, revoked_reason: str | None) -> _Verdict | None:
        assert row.id is not None and row.refresh_token_encrypted is not None
        stored = row.refresh_token_encrypted
        host = self._hosts.login_host(row.environment, row.login_host)
        try:
            token = self._cipher.decrypt(stored)
        except UndecryptableToken:
            return _Verdict(Health.BROKEN, messages.UNDECRYPTABLE, stored)
        try:
            grant = await salesforce(partial(self._sf.refresh, host, token))
        except ForgedResponse as forged:
            await self._pending.revoke_all(host, forged.tokens)  # not ours to keep
            raise
        except SalesforceLoginFailed as refused:
            if refused.error not in _ABOUT_THE_LINK:
                raise
            # The caller's explanation is for a revoked token, not an inactive user's.
            reason = revoked_reason if revoked_reason and _revoked(refused) else None
            return _Verdict(Health.BROKEN, reason or messages.broken_reason(refused), stored)
        if grant.refresh_token and grant.refresh_token != token:
            # Rotation is on and the old token is now dead: keep the new one before
            # anything else can fail.
            kept = await self._pending.keep_rotated(
                account_pk=row.id, host=host, old_encrypted=stored, new_token=grant.refresh_token
            )
            if kept is None:
                return None
            stored = kept
        try:
            identity = await salesforce(partial(self._sf.identity, grant))
            permissions = await salesforce(partial(self._sf.permissions, grant))
        except SalesforceLoginFailed as refused:
            if refused.error not in _ABOUT_THE_LINK:
                raise
            return _Verdict(Health.BROKEN, messages.broken_reason(refused), stored)
        verdict, why = judge(row, identity, permissions)
        return _Verdict(verdict, why, stored, permissions.missing_recommended())

    async def _not_checked(self, row: VccAccount, error: Exception) -> HealthCheck:
        """Nothing was learnt: release the claim, keep the stored state, say why."""
        assert row.id is not None
        if isinstance(error, SalesforceLoginFailed):
            reason = messages.could_not_check(error)
        else:
            reason = {
                SalesforceDown: messages.NOT_REACHED,
                ForgedResponse: messages.NOT_VERIFIED,
                DatabaseDown: messages.DATABASE_SLOW,
            }[type(error)]
        if not isinstance(error, DatabaseDown):
            with suppress(DatabaseDown):  # else the lease runs out by itself
                await self._store.write(partial(repo.release_check, account_pk=row.id))
        current = await self._current(row)
        return HealthCheck(current.account, Health.UNKNOWN, reason)

    async def _connected_app_refused(self, row: VccAccount, refused: SalesforceLoginFailed) -> None:
        """Salesforce refused the bot's connected app: every link at this host goes
        unchecked. Say so once a day per error, across replicas (the "once" is kept in the
        database): an ERROR line naming the setting to fix, and a DM to each admin who
        linked an account at this host. Never a notice per link: no link is broken.
        """
        host = self._hosts.login_host(row.environment, row.login_host)
        try:
            first = await self._store.write(
                partial(
                    repo.claim_once,
                    key_hash=hash_secret(f"connected-app-refused:{refused.error}"),
                    now=self._now(),
                    keep_for=APP_ALERT_EVERY,
                )
            )
            accounts = await self._store.read(repo.linked_accounts) if first else []
        except DatabaseDown:
            return  # the next check tries again
        if not first:
            return
        log.error(
            "Salesforce at %s refused the bot's connected app (%s: %s), so no link there can "
            "be checked; fix it: %s",
            host,
            refused.error,
            refused.description,
            messages.connected_app_fix(refused),
        )
        # Per workspace: an admin hears only of their own workspace's accounts (a Grid user
        # id is the same in every workspace of the org).
        by_admin: dict[tuple[str, str], list[AccountView]] = {}
        for account in accounts:
            if account.linked_by and (
                self._hosts.login_host(account.environment, account.login_host) == host
            ):
                view = account_view(account, team_id=account.team_id, account_id=account.account_id)
                by_admin.setdefault((account.team_id, account.linked_by), []).append(view)
        problem = messages.connected_app_problem(refused)
        for (_, admin), views in by_admin.items():
            await self._notifier.connected_app_refused(admin, views, problem)

    async def _current(self, row: VccAccount) -> HealthCheck:
        fresh = await self._store.read(
            partial(repo.get_account, team_id=row.team_id, account_id=row.account_id)
        )
        view = account_view(fresh, team_id=row.team_id, account_id=row.account_id)
        return HealthCheck(view, view.health, view.health_reason, view.health_checked_at)

    async def _result_of_other_check(self, row: VccAccount) -> HealthCheck:
        """Another replica holds the claim: wait for the result it records, within its lease."""
        deadline = asyncio.get_running_loop().time() + LEASE.total_seconds()
        while True:
            fresh = await self._store.read(
                partial(repo.get_account, team_id=row.team_id, account_id=row.account_id)
            )
            done = fresh is None or fresh.check_lease_until is None
            if done or asyncio.get_running_loop().time() > deadline:
                view = account_view(fresh, team_id=row.team_id, account_id=row.account_id)
                return HealthCheck(
                    view, view.health, view.health_reason, view.health_checked_at, reused=True
                )
            await asyncio.sleep(0.2)

    async def _record(self, row: VccAccount, verdict: _Verdict, *, actor: str) -> HealthCheck:
        now = self._now()
        team_id, account_id = row.team_id, row.account_id

        def save(session: Session) -> repo.HealthRecorded:
            recorded = repo.record_health(
                session,
                team_id=team_id,
                account_id=account_id,
                expected_token=verdict.token,
                health=verdict.health,
                reason=verdict.reason,
                now=now,
                permission_warnings=None
                if verdict.warnings is None
                else json.dumps(verdict.warnings),
            )
            change = transition(recorded.before, verdict.health)
            if change is not None:
                repo.add_event(
                    session,
                    team_id=team_id,
                    account_id=account_id,
                    event=change,
                    actor=actor,
                    now=now,
                    org_id=row.org_id,
                    sf_username=row.sf_username,
                    detail=verdict.reason,
                )
            return recorded

        try:
            recorded = await self._store.write(save)
        except repo.LinkReplaced:
            return await self._current(row)  # the result is about a token no link holds
        view = account_view(recorded.account, team_id=team_id, account_id=account_id)
        change = transition(recorded.before, verdict.health)
        if change == AuditKind.BROKEN and row.org_id:
            await self._hasten(row.org_id, now)
        if change == AuditKind.BROKEN:
            await self._notifier.broken(view)
        elif change == AuditKind.RECOVERED:
            await self._notifier.recovered(view)
        return HealthCheck(view, verdict.health, verdict.reason, now)

    async def _hasten(self, org_id: str, now: datetime) -> None:
        """What broke one link (a revoked connected app, a sandbox refresh) often broke
        its org's others: make them due now rather than over the next interval, so a mass
        revocation is found in one pass and told in one message per channel.

        A transaction of its own, after the result is recorded: inside it, two checks of
        the same org would each hold their row and wait for the other's (a deadlock).
        """
        try:
            await self._store.write(partial(repo.hasten_checks, org_id=org_id, now=now))
        except DatabaseDown:
            log.warning("could not bring the checks of org %s forward", org_id)

    # -- after a link, and for operators -------------------------------------------------

    async def recheck_api_user(
        self, ctx: LoginContext, *, org_id: str, sf_user_id: str, username: str, refused: bool
    ) -> list[AccountView]:
        """Salesforce may have revoked this API user's oldest approval: find what it cost.

        Called after every link, relink and refused link; the links found broken are
        announced in their channels (as any break is) and listed to the admin.
        """
        accounts = await self._store.read(
            partial(repo.accounts_for_api_user, org_id=org_id, sf_user_id=sf_user_id)
        )
        reason = messages.sixth_approval_reason(username, ctx.account_id)
        revoked = []
        for account in accounts:
            if (account.team_id, account.account_id) == (ctx.team_id, ctx.account_id):
                continue
            # Another workspace's link is its own: its audit trail does not name this
            # admin, and this admin is not told its name (its channel is, as for any break).
            here = account.team_id == ctx.team_id
            check = await self.check(
                account.team_id,
                account.account_id,
                actor=ctx.user_id if here else MONITOR,
                reuse=False,
                wait=False,
                revoked_reason=reason if here else messages.sixth_approval_elsewhere(username),
            )
            if check.health == Health.BROKEN and here:
                revoked.append(check.account)
        if revoked:
            await self._notifier.revoked_by_approval(ctx, revoked, refused=refused)
        return revoked

    async def mark_broken(self, team_id: str, account_id: str, reason: str, actor: str) -> None:
        """Record a link as broken for a reason found outside a live check (e.g. no key)."""
        row = await self._store.read(
            partial(repo.get_account, team_id=team_id, account_id=account_id)
        )
        if row is not None and row.refresh_token_encrypted:
            await self._record(
                row, _Verdict(Health.BROKEN, reason, row.refresh_token_encrypted), actor=actor
            )
