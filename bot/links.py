"""The core: start, complete, check and remove links between VCC accounts and Salesforce.

No Slack, HTTP-framework or web code here. People are told what happened through the
Notifier interface; failures are domain exceptions that the edges turn into words.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlmodel import Session

from bot.crypto import TokenCipher, UndecryptableToken
from bot.salesforce import (
    Permissions,
    SalesforceClient,
    SalesforceRejected,
    SalesforceUnavailable,
    SignatureMismatch,
    TokenGrant,
)
from storage import repository as repo
from storage.db import Database
from storage.models import Environment, Health, LinkStatus, VccAccount, utcnow

log = logging.getLogger(__name__)

LOGIN_TTL = timedelta(minutes=10)
# /vcc status promises an answer within seconds: a slow Salesforce is "could not check".
CHECK_TIMEOUT_SECONDS = 6.0
MAX_ACCOUNTS_PER_API_USER = 5
DEFAULT_ACCOUNT = "default"
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


# ---- domain errors -------------------------------------------------------------------


class LinkError(Exception):
    """A failure the person acting should hear about in plain words."""


class InvalidAccountId(LinkError):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


class LoginLinkProblem(LinkError):
    """The login link or OAuth state is unknown, expired, used or from another browser."""

    def __init__(self, problem: repo.AttemptProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


class LoginCancelled(LinkError):
    """The admin clicked Deny on Salesforce's approval page."""


class SalesforceLoginFailed(LinkError):
    """Salesforce refused the login or the code exchange."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.description = description


class SalesforceDown(LinkError):
    """Salesforce could not be reached or answered 5xx; nothing changed."""


class ForgedResponse(LinkError):
    """The token response's signature did not match the connected app's secret."""


class MissingPermissions(LinkError):
    def __init__(self, username: str, missing: list[str]) -> None:
        super().__init__(", ".join(missing))
        self.username = username
        self.missing = missing


class ApiUserLimit(LinkError):
    def __init__(self, username: str, linked_here: list[str], count: int) -> None:
        super().__init__(username)
        self.username = username
        self.linked_here = linked_here
        self.count = count


class LinkChanged(LinkError):
    """The link was replaced while this action ran; nothing of the new link was touched."""


class NotLinked(LinkError):
    def __init__(self, account_id: str) -> None:
        super().__init__(account_id)
        self.account_id = account_id


# ---- data handed to the edges (never a secret) --------------------------------------


@dataclass(frozen=True)
class LoginContext:
    team_id: str
    user_id: str
    account_id: str
    environment: Environment
    channel_id: str


@dataclass(frozen=True)
class AccountView:
    team_id: str
    account_id: str
    status: LinkStatus
    environment: Environment | None = None
    org_id: str | None = None
    sf_user_id: str | None = None
    sf_username: str | None = None
    instance_url: str | None = None
    linked_by: str | None = None
    linked_at: datetime | None = None
    notify_channel: str | None = None
    warnings: list[str] = field(default_factory=list)
    health: Health = Health.UNKNOWN
    health_reason: str | None = None
    health_checked_at: datetime | None = None

    @classmethod
    def of(cls, account: VccAccount | None, *, team_id: str, account_id: str) -> AccountView:
        if account is None:
            return cls(team_id=team_id, account_id=account_id, status=LinkStatus.UNLINKED)
        return cls(
            team_id=account.team_id,
            account_id=account.account_id,
            status=LinkStatus(account.status),
            environment=Environment(account.environment) if account.environment else None,
            org_id=account.org_id,
            sf_user_id=account.sf_user_id,
            sf_username=account.sf_username,
            instance_url=account.instance_url,
            linked_by=account.linked_by,
            linked_at=account.linked_at,
            notify_channel=account.notify_channel,
            warnings=json.loads(account.permission_warnings or "[]"),
            health=Health(account.health),
            health_reason=account.health_reason,
            health_checked_at=account.health_checked_at,
        )


@dataclass(frozen=True)
class LinkResult:
    account: AccountView
    relinked: bool
    unchecked: list[str]


@dataclass(frozen=True)
class HealthCheck:
    account: AccountView
    health: Health  # UNKNOWN here means "could not check"
    reason: str | None


class Notifier(Protocol):
    async def login_link(self, ctx: LoginContext, url: str, expires_in: timedelta) -> None: ...
    async def linked(self, ctx: LoginContext, result: LinkResult) -> None: ...
    async def link_failed(self, ctx: LoginContext, error: LinkError) -> None: ...
    async def unlinked(self, account: AccountView, by_user: str) -> None: ...
    async def broken(self, account: AccountView) -> None: ...


def parse_account_id(value: str | None) -> str:
    value = (value or "").strip() or DEFAULT_ACCOUNT
    if not ACCOUNT_ID.match(value):
        raise InvalidAccountId(value)
    return value


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
    detail = f": {exc.description}" if exc.description else ""
    return f"Salesforce refused the link ({exc.error}{detail})."


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
    ) -> None:
        self._db = db
        self._cipher = cipher
        self._sf = salesforce
        self._notifier = notifier
        self._hosts = login_hosts
        self._public_url = public_url
        self._now = clock

    # -- reading -------------------------------------------------------------------

    async def account(self, team_id: str, account_id: str) -> AccountView:
        row = await self._db.run(
            lambda s: repo.get_account(s, team_id=team_id, account_id=account_id)
        )
        return AccountView.of(row, team_id=team_id, account_id=account_id)

    # -- linking -------------------------------------------------------------------

    async def start_login(self, ctx: LoginContext) -> str:
        """Create a login link for the admin and send it to them."""
        link_token = secrets.token_urlsafe(32)
        now = self._now()
        await self._db.run(
            lambda s: repo.create_login_attempt(
                s,
                link_hash=_hash(link_token),
                team_id=ctx.team_id,
                slack_user_id=ctx.user_id,
                account_id=ctx.account_id,
                environment=ctx.environment.value,
                channel_id=ctx.channel_id,
                now=now,
                expires_at=now + LOGIN_TTL,
            )
        )
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
        host = self._hosts[Environment(bound.environment)]
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
        )
        try:
            return await self._finish(
                ctx, attempt.code_verifier_encrypted, code, error, error_description
            )
        except LinkError as exc:
            await self._notifier.link_failed(ctx, exc)
            raise

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
        host = self._hosts[ctx.environment]
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
            for token in exc.tokens:
                await self._revoke_quietly(host, token)
            raise ForgedResponse() from None
        try:
            return await self._record(ctx, host, grant)
        except LinkError:
            await self._revoke_quietly(host, grant.refresh_token or grant.access_token)
            raise

    async def _record(self, ctx: LoginContext, host: str, grant: TokenGrant) -> LinkResult:
        try:
            identity = await self._sf.identity(grant)
            permissions: Permissions = await self._sf.permissions(grant)
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

        def save(session: Session) -> tuple[tuple[str, str | None] | None, VccAccount | None]:
            previous = repo.save_link(
                session,
                team_id=ctx.team_id,
                account_id=ctx.account_id,
                details=details,
                now=now,
                max_accounts_per_user=MAX_ACCOUNTS_PER_API_USER,
            )
            return previous, repo.get_account(
                session, team_id=ctx.team_id, account_id=ctx.account_id
            )

        try:
            previous, row = await self._db.run(save)
        except repo.ApiUserFull as full:
            here = [account for team, account in full.linked if team == ctx.team_id]
            raise ApiUserLimit(identity.username, here, len(full.linked)) from None
        if previous is not None:
            # The new link is stored; only now is the old token given up, at its own host.
            old_token, old_host = previous
            await self._revoke_stored(old_token, old_host or host)
        result = LinkResult(
            account=AccountView.of(row, team_id=ctx.team_id, account_id=ctx.account_id),
            relinked=previous is not None,
            unchecked=permissions.unchecked_labels(),
        )
        await self._notifier.linked(ctx, result)
        return result

    async def _revoke_stored(self, token_encrypted: str, host: str) -> None:
        try:
            token = self._cipher.decrypt(token_encrypted)
        except UndecryptableToken:
            log.warning("previous refresh token could not be decrypted; not revoked")
            return
        await self._revoke_quietly(host, token)

    async def _revoke_quietly(self, host: str, token: str) -> None:
        try:
            await self._sf.revoke(host, token)
        except (SalesforceUnavailable, SalesforceRejected) as exc:
            log.warning("could not revoke a Salesforce token: %s", type(exc).__name__)

    # -- checking ------------------------------------------------------------------

    async def check(self, team_id: str, account_id: str) -> HealthCheck:
        """Refresh an access token and read the identity: is the link alive?"""
        row = await self._db.run(
            lambda s: repo.get_account(s, team_id=team_id, account_id=account_id)
        )
        view = AccountView.of(row, team_id=team_id, account_id=account_id)
        if row is None or view.status != LinkStatus.LINKED or not row.refresh_token_encrypted:
            return HealthCheck(view, Health.UNKNOWN, None)
        stored = row.refresh_token_encrypted
        host = row.login_host or self._hosts[Environment(row.environment or "production")]
        new_token: str | None = None
        try:
            token = self._cipher.decrypt(stored)
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                grant = await self._sf.refresh(host, token)
                identity = await self._sf.identity(grant)
        except TimeoutError:
            return HealthCheck(view, Health.UNKNOWN, "Salesforce did not answer in time.")
        except UndecryptableToken:
            health, reason = Health.BROKEN, "The stored token cannot be decrypted; relink."
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
        except SignatureMismatch:
            return HealthCheck(view, Health.UNKNOWN, "Salesforce's answer could not be verified.")
        else:
            if not identity.active:
                health, reason = Health.BROKEN, "The Salesforce API user is inactive."
            elif (identity.org_id, identity.user_id) != (row.org_id, row.sf_user_id):
                health, reason = Health.BROKEN, "The token belongs to another Salesforce user."
            else:
                health, reason = Health.HEALTHY, None
            if grant.refresh_token and grant.refresh_token != token:
                new_token = self._cipher.encrypt(grant.refresh_token)
        now = self._now()

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
            )
            return before, repo.get_account(session, team_id=team_id, account_id=account_id)

        before, row = await self._db.run(save)
        view = AccountView.of(row, team_id=team_id, account_id=account_id)
        if before is None:
            # Relinked or unlinked while we checked: this result is about an old token.
            return HealthCheck(view, view.health, view.health_reason)
        if health == Health.BROKEN and before != Health.BROKEN:
            await self._notifier.broken(view)
        return HealthCheck(view, health, reason)

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
            host = row.login_host or self._hosts[Environment(row.environment or "production")]
            try:
                await self._sf.revoke(host, self._cipher.decrypt(stored))
            except UndecryptableToken:
                log.warning("unlinking a token no key decrypts; it cannot be revoked")
            except SalesforceUnavailable:
                raise SalesforceDown() from None
            except SalesforceRejected as exc:
                log.warning("Salesforce refused to revoke (%s); unlinking anyway", exc.error)
        now = self._now()
        cleared = await self._db.run(
            lambda s: repo.mark_unlinked(
                s, team_id=team_id, account_id=account_id, expected_token=stored, now=now
            )
        )
        if cleared is None:
            raise LinkChanged()
        view = AccountView.of(row, team_id=team_id, account_id=account_id)
        await self._notifier.unlinked(view, user_id)
        return AccountView.of(cleared, team_id=team_id, account_id=account_id)
