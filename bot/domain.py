"""The link domain's words: enums, errors, the views handed to the edges, the Notifier.

No Slack, HTTP-framework or storage code here: storage imports these enums, not the
other way round.

Errors (every one a LinkError, which the edges turn into words with bot.messages):

    LinkError
    ├── InvalidAccountId, InvalidMyDomain        input refused before anything happens
    ├── LoginLinkProblem                         login link or state unknown, expired, used,
    │                                            from another browser, or withdrawn
    ├── LoginCancelled                           the admin clicked Deny at Salesforce
    ├── SalesforceLoginFailed                    Salesforce refused (an OAuth or REST error)
    ├── SalesforceDown                           Salesforce unreachable, 5xx or busy
    ├── ForgedResponse                           the token response's signature is wrong
    ├── DatabaseDown                             our database did not answer in time
    ├── MissingPermissions, ApiUserLimit         the API user cannot be linked
    ├── NotLinked                                nothing to unlink
    └── LinkChanged                              relinked or unlinked while this ran
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

DEFAULT_ACCOUNT = "default"
ACCOUNT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A My Domain login host: NAME.my.salesforce.com, or NAME.PARTITION.my.salesforce.com for
# each partition Salesforce documents for customer orgs (Tooling API, OrgDomainLog
# DomainPartition): sandbox (NAME--SANDBOX), develop (Developer Edition), scratch, demo,
# patch and trailblaze (Trailhead Playgrounds). free and sfdctest are "reserved for
# internal use" there, so refused.
MY_DOMAIN = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?"
    r"(?:\.(?:sandbox|develop|scratch|demo|patch|trailblaze))?\.my\.salesforce\.com"
)


# ---- the domain's words: storage imports these, never the other way ------------------

MAX_ACCOUNTS_PER_API_USER = 5  # Salesforce keeps at most five approvals per user and app


class LinkStatus(StrEnum):
    UNLINKED = "Unlinked"
    LINKED = "Linked"
    LEGACY = "Legacy"


class Health(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    BROKEN = "broken"


class Environment(StrEnum):
    PRODUCTION = "production"
    SANDBOX = "sandbox"
    CUSTOM = "custom"  # the org's My Domain host, for orgs that block the generic hosts

    @property
    def label(self) -> str:
        return "Custom domain" if self is Environment.CUSTOM else self.value.capitalize()


class AuditKind(StrEnum):
    LINK_STARTED = "link_started"
    LINK_COMPLETED = "link_completed"
    LINK_REFUSED = "link_refused"
    LINK_CANCELLED = "link_cancelled"
    UNLINKED = "unlinked"
    BROKEN = "broken"
    RECOVERED = "recovered"
    LEGACY_IMPORTED = "legacy_imported"
    NOTICE_FAILED = "notice_failed"  # a channel notice Slack would not take
    CHANNEL_SET = "channel_set"  # the notification channel chosen with /vcc channel


class AttemptProblem(StrEnum):
    """Why a login link or OAuth state cannot be used."""

    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED = "used"
    OTHER_BROWSER = "other_browser"
    WITHDRAWN = "withdrawn"  # the account was unlinked after the link was sent


# ---- domain errors -------------------------------------------------------------------


class LinkError(Exception):
    """A failure the person acting should hear about in plain words."""


class InvalidAccountId(LinkError):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


class InvalidMyDomain(LinkError):
    def __init__(self, value: str, *, unprintable: bool = False) -> None:
        super().__init__(value)
        self.value = value
        self.unprintable = unprintable  # a space, line break or control character inside


class LoginLinkProblem(LinkError):
    """The login link or OAuth state is unknown, expired, used, withdrawn or elsewhere."""

    def __init__(self, problem: AttemptProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


class LoginCancelled(LinkError):
    """The admin clicked Deny on Salesforce's approval page."""


class SalesforceLoginFailed(LinkError):
    """Salesforce refused: an OAuth error (code and description) or a REST error."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.description = description


class SalesforceDown(LinkError):
    """Salesforce could not be reached, answered 5xx, or our bound on calls was full."""


class ForgedResponse(LinkError):
    """The token response's signature did not match the connected app's secret.

    Carries the response's tokens so they can be revoked: they may work all the same.
    """

    def __init__(self, tokens: list[str] | None = None) -> None:
        super().__init__("the token response's signature does not match")
        self.tokens = tokens or []


class DatabaseDown(LinkError):
    """The bot's database did not answer in time; what was in flight was undone."""


class Busy(LinkError):
    """More requests are waiting than the bot will queue: this one was not started."""


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


class NotLinked(LinkError):
    def __init__(self, account_id: str) -> None:
        super().__init__(account_id)
        self.account_id = account_id


class LinkChanged(LinkError):
    """The link was replaced while this action ran; nothing of the new link was touched."""


# ---- data handed to the edges (never a secret) --------------------------------------


@dataclass(frozen=True)
class LoginContext:
    team_id: str
    user_id: str
    account_id: str
    environment: Environment
    channel_id: str
    login_host: str | None = None  # a custom domain's https URL; else the environment's host
    enterprise_id: str | None = None  # Enterprise Grid: whose installation posts for it


@dataclass(frozen=True)
class LoginLink:
    """What the admin is sent: the URL to open, and how long it works."""

    context: LoginContext
    url: str
    expires_in: timedelta


@dataclass(frozen=True)
class AccountView:
    team_id: str
    account_id: str
    status: LinkStatus
    enterprise_id: str | None = None
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
    # How many VCC accounts (in every workspace) the same API user serves, this one included.
    api_user_links: int = 0

    @property
    def api_user_full(self) -> bool:
        """A relink would be a sixth approval: Salesforce revokes that user's oldest one."""
        return self.status == LinkStatus.LINKED and self.api_user_links >= (
            MAX_ACCOUNTS_PER_API_USER
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
    checked_at: datetime | None = None  # when the result was found
    reused: bool = False  # a recent check's result, not a new call to Salesforce
    limited: bool = False  # the asker used up their live checks for now


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


class LoginEnd(StrEnum):
    """How a login link's flow ended, as its login DM and the click's reply tell it."""

    LINKED = "linked"
    CANCELLED = "cancelled"  # Deny at Salesforce
    REFUSED = "refused"  # Salesforce, the checks or the bot refused: the error says why
    WITHDRAWN = "withdrawn"  # the account was unlinked after the link was sent
    EXPIRED = "expired"  # nobody used it in time
    USED = "used"  # opened and called back, but its end was never told (a callback cut short)


@dataclass(frozen=True)
class SentMessage:
    """A message the bot posted, by its channel and timestamp (how Slack names a message)."""

    channel: str
    ts: str


@dataclass(frozen=True)
class LoginClosed:
    """A login that ended, told once where it began: its login DM and the click's reply."""

    context: LoginContext
    end: LoginEnd
    attempt_id: int  # the ended login, for "Send me a new link"
    started_at: datetime  # when the link was sent: the click's response_url is as old
    expires_at: datetime
    dm: SentMessage | None = None
    # The click's response_url: a capability to post as the bot there, so never shown.
    reply_to: str | None = field(default=None, repr=False)
    result: LinkResult | None = None  # LINKED
    error: LinkError | None = None  # CANCELLED, REFUSED, WITHDRAWN


# ---- /vcc doctor: what the configuration checks found -------------------------------


@dataclass(frozen=True)
class Finding:
    """One check: what was found and, for a problem, what to do about it."""

    check: str  # what was checked: "PUBLIC_URL", "Login host Production", ...
    passed: bool
    detail: str
    fix: str | None = None
    channel: str | None = None  # a Slack channel id the check is about

    @property
    def title(self) -> str:
        return f"{self.check} {self.channel}" if self.channel else self.check


@dataclass(frozen=True)
class DoctorReport:
    findings: list[Finding]
    team_id: str | None = None  # the workspace reported on; None: every workspace

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]

    @property
    def passed(self) -> bool:
        return not self.problems


class Notifier(Protocol):
    """What the core tells people; the Slack implementation lives in bot.notify."""

    async def linked(self, ctx: LoginContext, result: LinkResult) -> None: ...
    async def link_failed(self, ctx: LoginContext, error: LinkError) -> None: ...
    async def unlinked(self, account: AccountView, by_user: str) -> None: ...
    async def broken(self, account: AccountView) -> None: ...
    async def recovered(self, account: AccountView) -> None: ...
    async def revoked_by_approval(
        self, ctx: LoginContext, accounts: list[AccountView], *, refused: bool
    ) -> None: ...
    async def connected_app_refused(
        self, user_id: str, accounts: list[AccountView], problem: str
    ) -> None: ...
    async def login_closed(self, closed: LoginClosed) -> None:
        """The login DM and the click's reply show how the login ended (and a linked
        account's channel hears of it, as with `linked`)."""


def parse_account_id(value: str | None) -> str:
    value = (value or "").strip() or DEFAULT_ACCOUNT
    if not ACCOUNT_ID.fullmatch(value):
        raise InvalidAccountId(value)
    return value


def parse_my_domain(value: str) -> str:
    """An admin's My Domain host (with or without https://) as the login URL to use:
    NAME.my.salesforce.com, or with one of the documented partitions before
    my.salesforce.com (sandbox, develop, scratch, demo, patch, trailblaze; see MY_DOMAIN).

    Surrounding spaces are forgiven; a space, line break or other control character inside
    is refused, and so is anything that is not a whole My Domain host (fullmatch: `$`
    alone would accept a trailing newline).
    """
    trimmed = value.strip(" ")
    if any(ch.isspace() or not ch.isprintable() for ch in trimmed):
        raise InvalidMyDomain(trimmed, unprintable=True)
    host = trimmed.lower().removeprefix("https://").rstrip("/")
    if not MY_DOMAIN.fullmatch(host):
        raise InvalidMyDomain(trimmed)
    return f"https://{host}"
