"""The link domain's words: errors, the views handed to the edges, and the Notifier interface.

No Slack, HTTP-framework or storage code here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from storage.models import AuditEvent, Environment, Health, LinkStatus, VccAccount
from storage.repository import AttemptProblem

DEFAULT_ACCOUNT = "default"
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# A My Domain login host: NAME.my.salesforce.com, or NAME--SANDBOX.sandbox.my.salesforce.com.
MY_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?(?:\.sandbox)?\.my\.salesforce\.com$")


# ---- domain errors -------------------------------------------------------------------


class LinkError(Exception):
    """A failure the person acting should hear about in plain words."""


class InvalidAccountId(LinkError):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


class LoginLinkProblem(LinkError):
    """The login link or OAuth state is unknown, expired, used or from another browser."""

    def __init__(self, problem: AttemptProblem) -> None:
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
    def __init__(
        self, username: str, linked_here: list[str], count: int, org_id: str, user_id: str
    ) -> None:
        super().__init__(username)
        self.username = username
        self.linked_here = linked_here
        self.count = count
        self.org_id = org_id
        self.user_id = user_id


class LinkChanged(LinkError):
    """The link was replaced while this action ran; nothing of the new link was touched."""


class InvalidMyDomain(LinkError):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


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
    login_host: str | None = None  # a custom domain's https URL; else the environment's host


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


@dataclass(frozen=True)
class AuditEntry:
    event: str
    actor: str
    at: datetime
    team_id: str
    account_id: str
    org_id: str | None
    sf_username: str | None
    detail: str | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEntry:
        return cls(
            event=event.event,
            actor=event.actor,
            at=event.created_at,
            team_id=event.team_id,
            account_id=event.account_id,
            org_id=event.org_id,
            sf_username=event.sf_username,
            detail=event.detail,
        )


class Notifier(Protocol):
    async def login_link(self, ctx: LoginContext, url: str, expires_in: timedelta) -> None: ...
    async def linked(self, ctx: LoginContext, result: LinkResult) -> None: ...
    async def link_failed(self, ctx: LoginContext, error: LinkError) -> None: ...
    async def unlinked(self, account: AccountView, by_user: str) -> None: ...
    async def broken(self, account: AccountView) -> None: ...
    async def recovered(self, account: AccountView) -> None: ...
    async def revoked_by_sixth_approval(
        self, ctx: LoginContext, accounts: list[AccountView]
    ) -> None: ...


def parse_account_id(value: str | None) -> str:
    value = (value or "").strip() or DEFAULT_ACCOUNT
    if not ACCOUNT_ID.match(value):
        raise InvalidAccountId(value)
    return value


def parse_my_domain(value: str) -> str:
    """An admin's My Domain host (with or without https://) as the login URL to use."""
    host = value.strip().lower().removeprefix("https://").rstrip("/")
    if not MY_DOMAIN.match(host):
        raise InvalidMyDomain(value.strip())
    return f"https://{host}"
