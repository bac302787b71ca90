"""The login lifecycle: a login link is sent, opened in one browser, and completed once.

The callback (`complete`) reads top to bottom as a row of guard steps, after slack_bolt's
AsyncOAuthFlow.handle_callback: each step goes on or raises a LinkError, and every
failure ends in one place (`_refused`), which records it and tells the admin.

How a login ended is told where it began, once: its login DM loses its login button and
says it, and the click's "Check your DMs" reply is replaced. The callback tells its own
end; a sweep (`close_ended`, on the monitor's schedule) tells those that end with nobody
there: expired or withdrawn links, and callbacks cut short.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlmodel import Session

from bot import messages
from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import (
    ApiUserLimit,
    AttemptProblem,
    AuditKind,
    DatabaseDown,
    Environment,
    ForgedResponse,
    Health,
    LinkError,
    LinkResult,
    LoginCancelled,
    LoginClosed,
    LoginContext,
    LoginEnd,
    LoginLink,
    LoginLinkProblem,
    MissingPermissions,
    Notifier,
    SalesforceLoginFailed,
    SentMessage,
)
from bot.links.common import Background, Hosts, account_view, hash_secret
from bot.links.errors import Store, salesforce
from bot.links.health import LinkHealth
from bot.links.pending import Custody, PendingTokens
from bot.salesforce import Identity, Permissions, SalesforceClient, TokenGrant
from storage import repository as repo
from storage.models import LoginAttempt, PendingToken

log = logging.getLogger(__name__)

LOGIN_TTL = timedelta(minutes=10)
LOGIN_PATH = "/salesforce/login/"  # + the link token: the login link's path
# A callback takes seconds; one that called back longer ago than this and never told how
# it ended was cut short (its process died), and the sweep tells what it can.
USED_GRACE = timedelta(minutes=5)
SWEEP_BATCH = 200  # ended logins told per sweep; the next sweep takes the rest
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
_DENIED = ("access_denied", "access-denied")


@dataclass(frozen=True)
class Callback:
    """Salesforce's redirect back, as the browser brought it."""

    state: str | None
    browser_secret: str | None
    code: str | None
    error: str | None = None
    error_description: str | None = None


@dataclass(frozen=True)
class BrowserLogin:
    """Where to send the browser, and the secret that binds the login to it."""

    salesforce_url: str
    browser_secret: str


@dataclass(frozen=True)
class LoginPreview:
    """What a login link leads to, shown before anything is bound."""

    account_id: str
    environment: Environment
    login_host: str


def _presented(browser_secret: str | None) -> str | None:
    if browser_secret is None or not _SECRET.fullmatch(browser_secret):
        return None
    return hash_secret(browser_secret)


def _context(attempt: LoginAttempt) -> LoginContext:
    return LoginContext(
        team_id=attempt.team_id,
        user_id=attempt.slack_user_id,
        account_id=attempt.account_id,
        environment=Environment(attempt.environment),
        channel_id=attempt.channel_id,
        login_host=attempt.login_host,
        enterprise_id=attempt.enterprise_id,
    )


def _allowed_at_salesforce(callback: Callback) -> str:
    """The authorization code, if the admin clicked Allow and Salesforce sent one."""
    if callback.error in _DENIED:
        raise LoginCancelled()
    if callback.error or not callback.code:
        raise SalesforceLoginFailed(
            callback.error or "invalid_request", callback.error_description or ""
        )
    return callback.code


def _require_permissions(identity: Identity, permissions: Permissions) -> None:
    missing = permissions.missing_required()
    if missing:
        raise MissingPermissions(identity.username, missing)


def _require_refresh_token(grant: TokenGrant) -> str:
    if grant.refresh_token is None:
        raise SalesforceLoginFailed(
            "no_refresh_token",
            "Salesforce sent no refresh token: the connected app needs the refresh_token scope.",
        )
    return grant.refresh_token


class LoginFlow:
    def __init__(
        self,
        *,
        store: Store,
        cipher: TokenCipher,
        salesforce: SalesforceClient,
        hosts: Hosts,
        pending: PendingTokens,
        health: LinkHealth,
        notifier: Notifier,
        background: Background,
        public_url: str,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._sf = salesforce
        self._hosts = hosts
        self._pending = pending
        self._health = health
        self._notifier = notifier
        self._background = background
        self._public_url = public_url
        self._now = clock

    # -- 1. the link is sent -------------------------------------------------------------

    async def start(self, ctx: LoginContext, *, once: str | None = None) -> LoginLink | None:
        """Create a login link; the caller sends it to the admin.

        `once` names the click that asked (message, user, account): the same click
        delivered again, replayed or raced on another replica gets None, so one click
        makes one login link and one DM.
        """
        link_token = secrets.token_urlsafe(32)
        now = self._now()

        def create(session: Session) -> bool:
            if once is not None and not repo.claim_once(
                session, key_hash=hash_secret(once), now=now, keep_for=LOGIN_TTL
            ):
                return False
            repo.create_login_attempt(
                session,
                link_hash=hash_secret(link_token),
                team_id=ctx.team_id,
                enterprise_id=ctx.enterprise_id,
                slack_user_id=ctx.user_id,
                account_id=ctx.account_id,
                environment=ctx.environment.value,
                login_host=ctx.login_host,
                channel_id=ctx.channel_id,
                now=now,
                expires_at=now + LOGIN_TTL,
            )
            repo.add_event(
                session,
                team_id=ctx.team_id,
                account_id=ctx.account_id,
                event=AuditKind.LINK_STARTED,
                actor=ctx.user_id,
                now=now,
                detail=self._hosts.login_host(ctx.environment, ctx.login_host),
            )
            return True

        if not await self._store.write(create):
            return None
        return LoginLink(ctx, f"{self._public_url}{LOGIN_PATH}{link_token}", LOGIN_TTL)

    async def dm_sent(self, link: LoginLink, dm: SentMessage, reply_to: str | None = None) -> None:
        """Where the login DM went, and the click's response_url (kept encrypted: it lets
        whoever holds it post there), so that both can tell how the login ends."""
        record = partial(
            repo.record_login_messages,
            link_hash=hash_secret(link.url.removeprefix(self._public_url + LOGIN_PATH)),
            dm_channel=dm.channel,
            dm_ts=dm.ts,
            reply_url_encrypted=self._cipher.encrypt(reply_to) if reply_to else None,
        )
        try:
            await self._store.write(record)
        except DatabaseDown:  # the login still works; its messages will not show its end
            log.warning("could not record where a login DM went; it will keep its button")

    async def again(
        self, team_id: str, user_id: str, ended_id: int, *, once: str
    ) -> LoginLink | None:
        """A new login link for the same account, environment and channel as an ended one
        of this user's ("Send me a new link"); None for the same click delivered again.

        Raises LoginLinkProblem(UNKNOWN) for a login of someone else, or one forgotten
        (login links are kept a day after they expire).
        """
        ended = await self._store.read(partial(repo.get_login_attempt, attempt_id=ended_id))
        if ended is None or (ended.team_id, ended.slack_user_id) != (team_id, user_id):
            raise LoginLinkProblem(AttemptProblem.UNKNOWN)
        return await self.start(_context(ended), once=once)

    # -- 2. it is opened, in one browser ----------------------------------------------------

    async def preview(self, link_token: str, browser_secret: str | None) -> LoginPreview:
        """What opening the link would do; changes nothing (link scanners fetch links)."""
        if not _SECRET.fullmatch(link_token):
            raise LoginLinkProblem(AttemptProblem.UNKNOWN)
        try:
            attempt = await self._store.read(
                partial(
                    repo.peek_login_attempt,
                    link_hash=hash_secret(link_token),
                    presented_hash=_presented(browser_secret),
                    now=self._now(),
                )
            )
        except repo.AttemptRefused as refused:
            raise LoginLinkProblem(refused.problem) from None
        ctx = _context(attempt)
        host = self._hosts.login_host(ctx.environment, ctx.login_host)
        return LoginPreview(ctx.account_id, ctx.environment, host)

    async def open(self, link_token: str, browser_secret: str | None) -> BrowserLogin:
        """Bind a login link to this browser, with a fresh state and PKCE verifier.

        The browser is given a freshly minted secret every time: one it presents only
        proves it is the browser that opened the link before (session fixation).
        """
        if not _SECRET.fullmatch(link_token):
            raise LoginLinkProblem(AttemptProblem.UNKNOWN)
        fresh_secret = secrets.token_urlsafe(32)
        state = secrets.token_urlsafe(32)  # 256 random bits
        verifier = secrets.token_urlsafe(64)  # 86 characters, inside PKCE's 43..128
        try:
            attempt = await self._store.write(
                partial(
                    repo.bind_login_attempt,
                    link_hash=hash_secret(link_token),
                    presented_hash=_presented(browser_secret),
                    browser_hash=hash_secret(fresh_secret),
                    state_hash=hash_secret(state),
                    code_verifier_encrypted=self._cipher.encrypt(verifier),
                    now=self._now(),
                )
            )
        except repo.AttemptRefused as refused:
            raise LoginLinkProblem(refused.problem) from None
        host = self._hosts.login_host(attempt.environment, attempt.login_host)
        url = self._sf.authorize_url(host, state=state, code_verifier=verifier)
        return BrowserLogin(url, fresh_secret)

    # -- 3. Salesforce calls back ---------------------------------------------------------

    async def complete(self, callback: Callback) -> LinkResult:
        """Salesforce's redirect back: each step goes on, or ends in `_refused`."""
        attempt = await self._consume(callback)  # the state, once, in this browser
        ctx = _context(attempt)
        host = self._hosts.login_host(ctx.environment, ctx.login_host)
        try:
            code = _allowed_at_salesforce(callback)
            verifier = self._verifier(attempt)
            grant = await self._exchange(host, code, verifier)
            live = grant.refresh_token or grant.access_token
            async with self._pending.custody(
                host=host, token=live, team_id=ctx.team_id, account_id=ctx.account_id
            ) as custody:
                identity = await salesforce(partial(self._sf.identity, grant))
                permissions = await salesforce(partial(self._sf.permissions, grant))
                _require_permissions(identity, permissions)
                refresh_token = _require_refresh_token(grant)
                saved = await self._save(
                    ctx, attempt, host, grant, refresh_token, identity, permissions, custody
                )
        except LinkError as error:
            await self._refused(ctx, error, attempt)
            raise
        if saved.replaced is not None:
            await self._pending.give_up(saved.replaced)  # the old token, at its own host
        result = LinkResult(
            account=account_view(
                saved.link.account, team_id=ctx.team_id, account_id=ctx.account_id
            ),
            relinked=saved.link.relinked,
            unchecked=permissions.unchecked_labels(),
        )
        if not await self._tell_end(attempt, LoginEnd.LINKED, result=result):
            await self._notifier.linked(ctx, result)
        if saved.link.health_before == Health.BROKEN:
            await self._notifier.recovered(result.account)
        # Salesforce may have revoked this API user's oldest approval for this one.
        self._recheck_later(ctx, identity.org_id, identity.user_id, identity.username, False)
        return result

    async def _consume(self, callback: Callback) -> LoginAttempt:
        if not callback.state or not _SECRET.fullmatch(callback.state):
            raise LoginLinkProblem(AttemptProblem.UNKNOWN)
        browser = hash_secret(callback.browser_secret) if callback.browser_secret else None
        try:
            return await self._store.write(
                partial(
                    repo.consume_login_attempt,
                    state_hash=hash_secret(callback.state),
                    browser_hash=browser,
                    now=self._now(),
                )
            )
        except repo.AttemptRefused as refused:
            raise LoginLinkProblem(refused.problem) from None

    def _verifier(self, attempt: LoginAttempt) -> str:
        try:
            if attempt.code_verifier_encrypted is None:
                raise UndecryptableToken("no verifier")
            return self._cipher.decrypt(attempt.code_verifier_encrypted)
        except UndecryptableToken:
            raise LoginLinkProblem(AttemptProblem.UNKNOWN) from None

    async def _exchange(self, host: str, code: str, verifier: str) -> TokenGrant:
        try:
            return await salesforce(
                partial(self._sf.exchange_code, host, code=code, code_verifier=verifier)
            )
        except ForgedResponse as forged:
            # Not trusted, but the tokens may work all the same: kill them.
            await self._pending.revoke_all(host, forged.tokens)
            raise

    async def _save(
        self,
        ctx: LoginContext,
        attempt: LoginAttempt,
        host: str,
        grant: TokenGrant,
        refresh_token: str,
        identity: Identity,
        permissions: Permissions,
        custody: Custody,
    ) -> _Saved:
        assert attempt.id is not None
        attempt_id = attempt.id
        record = repo.LinkRecord(
            environment=ctx.environment.value,
            login_host=host,
            instance_url=grant.instance_url,
            identity_url=grant.identity_url,
            org_id=identity.org_id,
            sf_user_id=identity.user_id,
            sf_username=identity.username,
            refresh_token_encrypted=self._cipher.encrypt(refresh_token),
            permission_warnings=json.dumps(permissions.missing_recommended()),
            linked_by=ctx.user_id,
            notify_channel=ctx.channel_id,
        )
        now = self._now()

        def save(session: Session) -> _Saved:
            repo.require_not_withdrawn(session, attempt_id=attempt_id)
            link = repo.save_link(
                session,
                team_id=ctx.team_id,
                enterprise_id=ctx.enterprise_id,
                account_id=ctx.account_id,
                link=record,
                now=now,
            )
            replaced = None
            if link.replaced_token is not None:
                # The old token now belongs to no link: pending until revoked, so a failed
                # revoke or a crash before it is retried rather than forgotten.
                replaced = repo.add_pending_token(
                    session,
                    login_host=link.replaced_host or host,
                    token_encrypted=link.replaced_token,
                    team_id=ctx.team_id,
                    account_id=ctx.account_id,
                    now=now,
                )
            audit = partial(
                repo.add_event,
                session,
                team_id=ctx.team_id,
                account_id=ctx.account_id,
                actor=ctx.user_id,
                now=now,
                org_id=identity.org_id,
                sf_username=identity.username,
            )
            verb = "relinked at " if link.relinked else "linked at "
            audit(event=AuditKind.LINK_COMPLETED, detail=verb + host)
            if link.health_before == Health.BROKEN:
                audit(event=AuditKind.RECOVERED, detail="relinked")
            return _Saved(link, replaced)

        try:
            return await custody.commit(save)
        except repo.ApiUserFull as full:
            here = [account for team, account in full.linked if team == ctx.team_id]
            raise ApiUserLimit(
                identity.username, here, len(full.linked), identity.org_id, identity.user_id
            ) from None
        except repo.AttemptRefused as refused:
            raise LoginLinkProblem(refused.problem) from None

    # -- every failure ends here ------------------------------------------------------------

    async def _refused(self, ctx: LoginContext, error: LinkError, attempt: LoginAttempt) -> None:
        """Tell the admin, record it, and for a refused sixth link find what it cost."""
        # With the database down there is no telling it once; the sweep tells it later.
        told = not isinstance(error, DatabaseDown) and await self._tell_end(
            attempt, _end_of(error), error=error
        )
        if not told:
            await self._notifier.link_failed(ctx, error)
        cancelled = isinstance(error, LoginCancelled)
        record = partial(
            repo.add_event,
            team_id=ctx.team_id,
            account_id=ctx.account_id,
            event=AuditKind.LINK_CANCELLED if cancelled else AuditKind.LINK_REFUSED,
            actor=ctx.user_id,
            now=self._now(),
            detail=None if cancelled else messages.refusal_reason(error),
        )
        # The database may be what failed: then this is recorded once it answers again.
        await self._store.write_or_retry(record, self._background)
        if isinstance(error, ApiUserLimit):  # refused, but still an approval at Salesforce
            self._recheck_later(ctx, error.org_id, error.user_id, error.username, True)

    def _recheck_later(
        self, ctx: LoginContext, org_id: str, user_id: str, username: str, refused: bool
    ) -> None:
        self._background.spawn(
            self._health.recheck_api_user(
                ctx, org_id=org_id, sf_user_id=user_id, username=username, refused=refused
            )
        )

    # -- 4. its end is told where it began, once ------------------------------------------

    async def _tell_end(
        self,
        attempt: LoginAttempt,
        end: LoginEnd,
        *,
        result: LinkResult | None = None,
        error: LinkError | None = None,
    ) -> bool:
        """Show the login's end in its DM and the click's reply; False when they cannot be
        (never recorded, already told, or the database did not answer): the caller then
        tells the admin in a new DM instead."""
        assert attempt.id is not None
        try:
            claimed = await self._store.write(
                partial(repo.claim_login_close, attempt_id=attempt.id, now=self._now())
            )
        except DatabaseDown:
            return False
        if claimed is None:  # a sweep took it: a callback slower than USED_GRACE
            return False
        closed = self._closed(claimed, end, result=result, error=error)
        if closed.dm is None and closed.reply_to is None:
            return False
        await self._notifier.login_closed(closed)
        return True

    async def close_ended(self) -> int:
        """Tell the logins that ended with nobody there that they ended: expired or
        withdrawn links, and callbacks cut short. Each is claimed first (one conditional
        UPDATE), so however many replicas sweep at once, each is told once. Returns how
        many this sweep told."""
        now = self._now()
        ended = await self._store.read(
            partial(
                repo.ended_login_attempts,
                now=now,
                used_before=now - USED_GRACE,
                limit=SWEEP_BATCH,
            )
        )
        told = 0
        for attempt in ended:
            assert attempt.id is not None
            claimed = await self._store.write(
                partial(repo.claim_login_close, attempt_id=attempt.id, now=now)
            )
            if claimed is None:
                continue  # another replica's sweep, or the callback, is telling it
            if claimed.consumed_at is not None:
                end, error = LoginEnd.USED, None
            elif claimed.withdrawn_at is not None:
                end, error = LoginEnd.WITHDRAWN, LoginLinkProblem(AttemptProblem.WITHDRAWN)
            else:
                end, error = LoginEnd.EXPIRED, LoginLinkProblem(AttemptProblem.EXPIRED)
            await self._notifier.login_closed(self._closed(claimed, end, error=error))
            told += 1
        if told:
            log.info("told %d ended login(s) in their login DMs", told)
        return told

    def _closed(
        self,
        attempt: LoginAttempt,
        end: LoginEnd,
        *,
        result: LinkResult | None = None,
        error: LinkError | None = None,
    ) -> LoginClosed:
        assert attempt.id is not None
        dm = None
        if attempt.dm_channel and attempt.dm_ts:
            dm = SentMessage(attempt.dm_channel, attempt.dm_ts)
        reply_to = None
        if attempt.reply_url_encrypted:
            try:
                reply_to = self._cipher.decrypt(attempt.reply_url_encrypted)
            except UndecryptableToken:  # its key was retired: only the DM is told
                log.info("a login's reply URL cannot be decrypted; its DM alone is told")
        return LoginClosed(
            context=_context(attempt),
            end=end,
            attempt_id=attempt.id,
            started_at=attempt.created_at,
            expires_at=attempt.expires_at,
            dm=dm,
            reply_to=reply_to,
            result=result,
            error=error,
        )


def _end_of(error: LinkError) -> LoginEnd:
    if isinstance(error, LoginCancelled):
        return LoginEnd.CANCELLED
    if isinstance(error, LoginLinkProblem) and error.problem is AttemptProblem.WITHDRAWN:
        return LoginEnd.WITHDRAWN
    return LoginEnd.REFUSED


@dataclass(frozen=True)
class _Saved:
    link: repo.SavedLink
    replaced: PendingToken | None
