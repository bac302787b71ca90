"""The core: start, complete, check and remove links between VCC accounts and Salesforce.

No Slack, HTTP-framework or web code here. People are told what happened through the
Notifier interface; failures are domain exceptions (bot.domain) that the edges turn into
words. Every change to a link is written to the audit trail in the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from sqlmodel import Session

from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import (
    AccountView,
    ApiUserLimit,
    AuditEntry,
    ForgedResponse,
    HealthCheck,
    LinkChanged,
    LinkError,
    LinkResult,
    LoginCancelled,
    LoginContext,
    LoginLinkProblem,
    MissingPermissions,
    Notifier,
    NotLinked,
    SalesforceDown,
    SalesforceLoginFailed,
)
from bot.salesforce import (
    SalesforceClient,
    SalesforceRejected,
    SalesforceUnavailable,
    SignatureMismatch,
    TokenGrant,
)
from storage import repository as repo
from storage.db import Database
from storage.models import (
    AuditKind,
    Environment,
    Health,
    LinkStatus,
    PendingToken,
    VccAccount,
    utcnow,
)

log = logging.getLogger(__name__)

LOGIN_TTL = timedelta(minutes=10)
# /vcc status promises an answer within seconds: a slow Salesforce is "could not check".
CHECK_TIMEOUT_SECONDS = 6.0
# A token between exchange and commit for longer than this was left by a dead process.
PENDING_GRACE = timedelta(minutes=5)
_SECRET = re.compile(r"^[A-Za-z0-9_-]{32,128}$")

MONITOR = "monitor"  # the actor of checks nobody asked for
UNDECRYPTABLE = "The stored token cannot be decrypted with any key in VCC_ENCRYPTION_KEY; relink."


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def broken_reason(exc: SalesforceRejected) -> str:
    """Explain a refused refresh the way an admin can act on it."""
    description = exc.description.lower()
    if exc.error == "invalid_grant" and "ip restricted" in description:
        return "Salesforce refused the API user's login: IP restricted or invalid login hours."
    if exc.error == "invalid_grant":
        return (
            "Salesforce refused the stored token (invalid_grant): it was revoked or has "
            "expired, for example by an admin, the org's refresh-token policy, or a sixth "
            "approval by the same API user."
        )
    if exc.error == "inactive_user":
        return "The Salesforce API user is inactive (deactivated or frozen)."
    if exc.error == "inactive_org":
        return "The Salesforce org is locked or inactive."
    if exc.error == "identity_refused":
        # A token refreshed a moment ago and refused now: revoked meanwhile, or no access.
        return (
            "Salesforce refused a fresh access token for this link: it was revoked while "
            "being checked, or the API user lost access."
        )
    detail = f": {exc.description}" if exc.description else ""
    return f"Salesforce refused the link ({exc.error}{detail})."


def refusal_reason(error: LinkError) -> str:
    """A short, plain reason for the audit trail."""
    match error:
        case MissingPermissions(missing=missing):
            return "missing required permissions: " + ", ".join(missing)
        case ApiUserLimit(username=username, count=count):
            return f"API user {username} already linked to {count} VCC accounts"
        case SalesforceLoginFailed(error=code, description=description):
            return f"Salesforce refused: {code}" + (f" ({description})" if description else "")
        case SalesforceDown():
            return "Salesforce unavailable"
        case ForgedResponse():
            return "token response signature did not match"
        case LoginLinkProblem(problem=problem):
            return f"login link {problem.value}"
    return type(error).__name__


def transition(before: Health | None, after: Health) -> AuditKind | None:
    """The change worth recording and announcing: once per change, never for the same state."""
    if before is None or before == after:
        return None
    if after == Health.BROKEN:
        return AuditKind.BROKEN
    if after == Health.HEALTHY and before == Health.BROKEN:
        return AuditKind.RECOVERED
    return None


def sixth_approval_reason(username: str, account_id: str) -> str:
    return (
        f"Salesforce revoked this link because the API user {username} approved a sixth "
        f"connection (while linking VCC account {account_id}); Salesforce keeps at most five "
        "per user. Relink this account with another API user."
    )


class LinkService:
    """Start, complete, check and remove links; the one owner of the link rules."""

    def __init__(
        self,
        *,
        db: Database,
        cipher: TokenCipher,
        salesforce: SalesforceClient,
        notifier: Notifier,
        login_hosts: dict[Environment, str],
        public_url: str,
        clock: Callable[[], datetime] = utcnow,
        check_timeout: float = CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self._db = db
        self._cipher = cipher
        self._sf = salesforce
        self._notifier = notifier
        self._hosts = login_hosts
        self._public_url = public_url
        self._now = clock
        self._check_timeout = check_timeout

    def _host(self, environment: str | None, login_host: str | None) -> str:
        if login_host:
            return login_host
        return self._hosts[Environment(environment or Environment.PRODUCTION)]

    # -- reading -------------------------------------------------------------------

    async def account(self, team_id: str, account_id: str) -> AccountView:
        row = await self._db.run(
            lambda s: repo.get_account(s, team_id=team_id, account_id=account_id)
        )
        return AccountView.of(row, team_id=team_id, account_id=account_id)

    async def history(self, team_id: str, account_id: str, limit: int = 10) -> list[AuditEntry]:
        rows = await self._db.run(
            lambda s: repo.recent_events(s, team_id=team_id, account_id=account_id, limit=limit)
        )
        return [AuditEntry.of(row) for row in rows]

    # -- linking -------------------------------------------------------------------

    async def start_login(self, ctx: LoginContext) -> str:
        """Create a login link for the admin and send it to them."""
        link_token = secrets.token_urlsafe(32)
        now = self._now()

        def create(session: Session) -> None:
            repo.create_login_attempt(
                session,
                link_hash=_hash(link_token),
                team_id=ctx.team_id,
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
                detail=self._host(ctx.environment, ctx.login_host),
            )

        await self._db.run(create)
        url = f"{self._public_url}/salesforce/login/{link_token}"
        await self._notifier.login_link(ctx, url, LOGIN_TTL)
        return url

    async def open_login(self, link_token: str, browser_secret: str | None) -> tuple[str, str]:
        """Bind a login link to this browser; returns (Salesforce URL, browser secret)."""
        if not _SECRET.match(link_token):
            raise LoginLinkProblem(repo.AttemptProblem.UNKNOWN)
        if browser_secret is None or not _SECRET.match(browser_secret):
            browser_secret = secrets.token_urlsafe(32)
        state = secrets.token_urlsafe(32)  # 256 random bits
        verifier = secrets.token_urlsafe(64)  # 86 characters, inside PKCE's 43..128
        now = self._now()
        bound = await self._db.run(
            lambda s: repo.bind_login_attempt(
                s,
                link_hash=_hash(link_token),
                browser_hash=_hash(browser_secret),
                state_hash=_hash(state),
                code_verifier_encrypted=self._cipher.encrypt(verifier),
                now=now,
            )
        )
        if isinstance(bound, repo.AttemptProblem):
            raise LoginLinkProblem(bound)
        host = self._host(bound.environment, bound.login_host)
        return self._sf.authorize_url(host, state=state, code_verifier=verifier), browser_secret

    async def complete(
        self,
        *,
        state: str | None,
        browser_secret: str | None,
        code: str | None,
        error: str | None,
        error_description: str | None,
    ) -> LinkResult:
        """Handle Salesforce's redirect back; the state is checked before anything else."""
        if not state or not _SECRET.match(state):
            raise LoginLinkProblem(repo.AttemptProblem.UNKNOWN)
        now = self._now()
        browser_hash = _hash(browser_secret) if browser_secret else None
        attempt = await self._db.run(
            lambda s: repo.consume_login_attempt(
                s, state_hash=_hash(state), browser_hash=browser_hash, now=now
            )
        )
        if isinstance(attempt, repo.AttemptProblem):
            raise LoginLinkProblem(attempt)
        ctx = LoginContext(
            team_id=attempt.team_id,
            user_id=attempt.slack_user_id,
            account_id=attempt.account_id,
            environment=Environment(attempt.environment),
            channel_id=attempt.channel_id,
            login_host=attempt.login_host,
        )
        try:
            return await self._finish(
                ctx, attempt.code_verifier_encrypted, code, error, error_description
            )
        except LinkError as exc:
            await self._failed(ctx, exc)
            raise

    async def _failed(self, ctx: LoginContext, error: LinkError) -> None:
        kind = AuditKind.LINK_CANCELLED if isinstance(error, LoginCancelled) else None
        await self._db.run(
            lambda s: repo.add_event(
                s,
                team_id=ctx.team_id,
                account_id=ctx.account_id,
                event=kind or AuditKind.LINK_REFUSED,
                actor=ctx.user_id,
                now=self._now(),
                detail=None if kind else refusal_reason(error),
            )
        )
        await self._notifier.link_failed(ctx, error)
        if isinstance(error, ApiUserLimit):
            await self._after_sixth_approval(ctx, error)

    async def _finish(
        self,
        ctx: LoginContext,
        verifier_encrypted: str | None,
        code: str | None,
        error: str | None,
        error_description: str | None,
    ) -> LinkResult:
        if error in ("access_denied", "access-denied"):
            raise LoginCancelled()
        if error or not code:
            raise SalesforceLoginFailed(error or "invalid_request", error_description or "")
        if verifier_encrypted is None:
            raise LoginLinkProblem(repo.AttemptProblem.UNKNOWN)
        host = self._host(ctx.environment, ctx.login_host)
        try:
            verifier = self._cipher.decrypt(verifier_encrypted)
            grant = await self._sf.exchange_code(host, code=code, code_verifier=verifier)
        except UndecryptableToken:
            raise LoginLinkProblem(repo.AttemptProblem.UNKNOWN) from None
        except SalesforceRejected as exc:
            raise SalesforceLoginFailed(exc.error, exc.description) from None
        except SalesforceUnavailable:
            raise SalesforceDown() from None
        except SignatureMismatch as exc:
            # The tokens may still work even if the answer is not trusted: kill them.
            for token in exc.tokens:
                await self._revoke_quietly(host, token)
            raise ForgedResponse() from None
        # From here until the link is committed (or the token revoked) the token is
        # recorded as pending, so a crash in between cannot leave it live forever.
        live_token = grant.refresh_token or grant.access_token
        pending = await self._db.run(
            lambda s: repo.add_pending_token(
                s,
                login_host=host,
                token_encrypted=self._cipher.encrypt(live_token),
                team_id=ctx.team_id,
                account_id=ctx.account_id,
                now=self._now(),
            )
        )
        assert pending.id is not None
        pending_id = pending.id
        try:
            return await self._record(ctx, host, grant, pending_id)
        except LinkError:
            if await self._revoke_quietly(host, live_token):
                await self._db.run(lambda s: repo.delete_pending_token(s, pending_id=pending_id))
            raise

    async def _record(
        self, ctx: LoginContext, host: str, grant: TokenGrant, pending_id: int
    ) -> LinkResult:
        try:
            identity = await self._sf.identity(grant)
            permissions = await self._sf.permissions(grant)
        except SalesforceUnavailable:
            raise SalesforceDown() from None
        except SalesforceRejected as exc:
            raise SalesforceLoginFailed(exc.error, exc.description) from None
        missing = permissions.missing_required()
        if missing:
            raise MissingPermissions(identity.username, missing)
        if grant.refresh_token is None:
            raise SalesforceLoginFailed(
                "no_refresh_token",
                "Salesforce sent no refresh token: the connected app needs the "
                "refresh_token scope.",
            )
        details = repo.LinkDetails(
            environment=ctx.environment.value,
            login_host=host,
            instance_url=grant.instance_url,
            identity_url=grant.identity_url,
            org_id=identity.org_id,
            sf_user_id=identity.user_id,
            sf_username=identity.username,
            refresh_token_encrypted=self._cipher.encrypt(grant.refresh_token),
            permission_warnings=json.dumps(permissions.missing_recommended()),
            linked_by=ctx.user_id,
            notify_channel=ctx.channel_id,
        )
        now = self._now()

        def save(session: Session) -> tuple[PendingToken | None, Health, VccAccount | None]:
            previous, health_before = repo.save_link(
                session,
                team_id=ctx.team_id,
                account_id=ctx.account_id,
                details=details,
                now=now,
            )
            repo.delete_pending_token(session, pending_id=pending_id)
            replaced = None
            if previous is not None:
                # The old token now belongs to no link: pending until revoked, so a failed
                # revoke or a crash before it is retried rather than forgotten.
                old_token, old_host = previous
                replaced = repo.add_pending_token(
                    session,
                    login_host=old_host or host,
                    token_encrypted=old_token,
                    team_id=ctx.team_id,
                    account_id=ctx.account_id,
                    now=now,
                )

            def audit(event: AuditKind, detail: str | None = None) -> None:
                repo.add_event(
                    session,
                    team_id=ctx.team_id,
                    account_id=ctx.account_id,
                    event=event,
                    actor=ctx.user_id,
                    now=now,
                    org_id=identity.org_id,
                    sf_username=identity.username,
                    detail=detail,
                )

            audit(AuditKind.LINK_COMPLETED, ("relinked at " if previous else "linked at ") + host)
            if health_before == Health.BROKEN:
                audit(AuditKind.RECOVERED, "relinked")
            row = repo.get_account(session, team_id=ctx.team_id, account_id=ctx.account_id)
            return replaced, health_before, row

        try:
            replaced, health_before, row = await self._db.run(save)
        except repo.ApiUserFull as full:
            here = [account for team, account in full.linked if team == ctx.team_id]
            raise ApiUserLimit(
                identity.username, here, len(full.linked), identity.org_id, identity.user_id
            ) from None
        if replaced is not None:
            # The new link is stored; only now is the old token given up, at its own host.
            await self._revoke_pending(replaced)
        view = AccountView.of(row, team_id=ctx.team_id, account_id=ctx.account_id)
        result = LinkResult(
            account=view, relinked=replaced is not None, unchecked=permissions.unchecked_labels()
        )
        await self._notifier.linked(ctx, result)
        if health_before == Health.BROKEN:
            await self._notifier.recovered(view)
        return result

    async def _after_sixth_approval(self, ctx: LoginContext, error: ApiUserLimit) -> None:
        """A refused sixth link was still a sixth approval: find the link it cost."""
        accounts = await self._db.run(
            lambda s: repo.accounts_for_api_user(s, org_id=error.org_id, sf_user_id=error.user_id)
        )
        reason = sixth_approval_reason(error.username, ctx.account_id)
        revoked = []
        for account in accounts:
            check = await self.check(
                account.team_id, account.account_id, actor=ctx.user_id, revoked_reason=reason
            )
            if check.health == Health.BROKEN:
                revoked.append(check.account)
        if revoked:
            await self._notifier.revoked_by_sixth_approval(ctx, revoked)

    async def _revoke_quietly(self, host: str, token: str) -> bool:
        """Revoke if Salesforce answers; True when the token is certainly dead."""
        try:
            await self._sf.revoke(host, token)
        except (SalesforceUnavailable, SalesforceRejected) as exc:
            log.warning("could not revoke a Salesforce token: %s", type(exc).__name__)
            return False
        return True

    async def _revoke_pending(self, pending: PendingToken) -> bool:
        """Revoke a pending token and forget it; kept for a later try if Salesforce is down."""
        try:
            token: str | None = self._cipher.decrypt(pending.token_encrypted)
        except UndecryptableToken:
            log.warning("a pending token cannot be decrypted; it cannot be revoked")
            token = None
        if token is not None and not await self._revoke_quietly(pending.login_host, token):
            return False
        assert pending.id is not None
        await self._db.run(partial(repo.delete_pending_token, pending_id=pending.id))
        return token is not None

    async def revoke_stale_pending(self) -> int:
        """Revoke tokens a dead process or a failed revoke left pending; returns how many."""
        cutoff = self._now() - PENDING_GRACE
        stale = await self._db.run(lambda s: repo.stale_pending_tokens(s, created_before=cutoff))
        revoked = 0
        for pending in stale:
            revoked += await self._revoke_pending(pending)
        if stale:
            log.info("revoked %d token(s) left pending by an interrupted link", revoked)
        return revoked

    # -- checking ------------------------------------------------------------------

    async def check(
        self,
        team_id: str,
        account_id: str,
        *,
        actor: str = MONITOR,
        revoked_reason: str | None = None,
    ) -> HealthCheck:
        """Refresh a token, read the identity and permissions: is the link alive?

        `revoked_reason` explains an invalid_grant when the caller knows its cause.
        """
        row = await self._db.run(
            lambda s: repo.get_account(s, team_id=team_id, account_id=account_id)
        )
        view = AccountView.of(row, team_id=team_id, account_id=account_id)
        if row is None or view.status != LinkStatus.LINKED or not row.refresh_token_encrypted:
            return HealthCheck(view, Health.UNKNOWN, None)
        stored = row.refresh_token_encrypted
        host = self._host(row.environment, row.login_host)
        new_token: str | None = None
        warnings: list[str] | None = None
        reason: str | None
        try:
            token = self._cipher.decrypt(stored)
            async with asyncio.timeout(self._check_timeout):
                grant = await self._sf.refresh(host, token)
                identity = await self._sf.identity(grant)
                permissions = await self._sf.permissions(grant)
        except TimeoutError:
            return HealthCheck(view, Health.UNKNOWN, "Salesforce did not answer in time.")
        except UndecryptableToken:
            health, reason = Health.BROKEN, UNDECRYPTABLE
        except SalesforceUnavailable:
            return HealthCheck(view, Health.UNKNOWN, "Salesforce could not be reached.")
        except SalesforceRejected as exc:
            if exc.error == "invalid_client":
                return HealthCheck(
                    view,
                    Health.UNKNOWN,
                    "Salesforce refused the bot's connected-app credentials "
                    "(SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET).",
                )
            health, reason = Health.BROKEN, broken_reason(exc)
            if exc.error == "invalid_grant" and revoked_reason:
                reason = revoked_reason
        except SignatureMismatch:
            return HealthCheck(view, Health.UNKNOWN, "Salesforce's answer could not be verified.")
        else:
            missing = permissions.missing_required()
            warnings = permissions.missing_recommended()
            if not identity.active:
                health, reason = Health.BROKEN, "The Salesforce API user is inactive."
            elif (identity.org_id, identity.user_id) != (row.org_id, row.sf_user_id):
                health, reason = Health.BROKEN, "The token belongs to another Salesforce user."
            elif missing:
                health = Health.BROKEN
                reason = "The API user lost required permissions: " + ", ".join(missing) + "."
            else:
                health, reason = Health.HEALTHY, None
            if grant.refresh_token and grant.refresh_token != token:
                new_token = self._cipher.encrypt(grant.refresh_token)  # rotation is on
        return await self._record_health(
            row, stored, health, reason, actor=actor, new_token=new_token, warnings=warnings
        )

    async def _record_health(
        self,
        row: VccAccount,
        stored: str,
        health: Health,
        reason: str | None,
        *,
        actor: str,
        new_token: str | None = None,
        warnings: list[str] | None = None,
    ) -> HealthCheck:
        now = self._now()
        team_id, account_id = row.team_id, row.account_id

        def save(session: Session) -> tuple[Health | None, VccAccount | None]:
            before = repo.record_health(
                session,
                team_id=team_id,
                account_id=account_id,
                expected_token=stored,
                health=health,
                reason=reason,
                now=now,
                new_token_encrypted=new_token,
                permission_warnings=None if warnings is None else json.dumps(warnings),
            )
            change = transition(before, health)
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
                    detail=reason,
                )
            return before, repo.get_account(session, team_id=team_id, account_id=account_id)

        before, fresh = await self._db.run(save)
        view = AccountView.of(fresh, team_id=team_id, account_id=account_id)
        if before is None:
            # Relinked or unlinked while we checked: this result is about an old token.
            return HealthCheck(view, view.health, view.health_reason)
        change = transition(before, health)
        if change == AuditKind.BROKEN:
            await self._notifier.broken(view)
        elif change == AuditKind.RECOVERED:
            await self._notifier.recovered(view)
        return HealthCheck(view, health, reason)

    async def mark_broken(self, team_id: str, account_id: str, reason: str, actor: str) -> None:
        """Record a link as broken for a reason found outside a live check (e.g. no key)."""
        row = await self._db.run(
            lambda s: repo.get_account(s, team_id=team_id, account_id=account_id)
        )
        if row is not None and row.refresh_token_encrypted:
            await self._record_health(
                row, row.refresh_token_encrypted, Health.BROKEN, reason, actor=actor
            )

    # -- unlinking -----------------------------------------------------------------

    async def unlink(self, team_id: str, account_id: str, user_id: str) -> AccountView:
        """Revoke at Salesforce, then forget the link. On a Salesforce outage nothing changes."""
        row = await self._db.run(
            lambda s: repo.get_account(s, team_id=team_id, account_id=account_id)
        )
        if row is None or row.status == LinkStatus.UNLINKED:
            raise NotLinked(account_id)
        stored = row.refresh_token_encrypted
        if stored is not None:
            host = self._host(row.environment, row.login_host)
            try:
                await self._sf.revoke(host, self._cipher.decrypt(stored))
            except UndecryptableToken:
                log.warning("unlinking a token no key decrypts; it cannot be revoked")
            except SalesforceUnavailable:
                raise SalesforceDown() from None
            except SalesforceRejected as exc:
                log.warning("Salesforce refused to revoke (%s); unlinking anyway", exc.error)
        now = self._now()

        def clear(session: Session) -> VccAccount | None:
            cleared = repo.mark_unlinked(
                session, team_id=team_id, account_id=account_id, expected_token=stored, now=now
            )
            if cleared is not None:
                repo.add_event(
                    session,
                    team_id=team_id,
                    account_id=account_id,
                    event=AuditKind.UNLINKED,
                    actor=user_id,
                    now=now,
                    org_id=row.org_id,
                    sf_username=row.sf_username,
                )
            return cleared

        cleared = await self._db.run(clear)
        if cleared is None:
            raise LinkChanged()
        view = AccountView.of(row, team_id=team_id, account_id=account_id)
        await self._notifier.unlinked(view, user_id)
        return AccountView.of(cleared, team_id=team_id, account_id=account_id)
