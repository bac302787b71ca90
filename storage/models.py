"""SQLModel tables. Secrets are stored only encrypted (the refresh token, the PKCE verifier)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from bot.domain import (
    MAX_ACCOUNTS_PER_API_USER,
    AuditKind,
    Environment,
    Health,
    LinkStatus,
)

__all__ = [
    "MAX_ACCOUNTS_PER_API_USER",
    "ApiUser",
    "AuditEvent",
    "AuditKind",
    "Environment",
    "Health",
    "LinkFields",
    "LinkStatus",
    "LoginAttempt",
    "OnceKey",
    "PendingToken",
    "RateWindow",
    "VccAccount",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Always UTC and timezone-aware, also on SQLite, which stores no zone."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(*, nullable: bool = True) -> Column:  # type: ignore[type-arg]
    return Column(UTCDateTime(), nullable=nullable)


class LinkFields(SQLModel):
    """What a completed link records about its Salesforce side (no secret in clear)."""

    environment: str | None = Field(default=None, max_length=16)
    login_host: str | None = Field(default=None, max_length=255)
    instance_url: str | None = Field(default=None, max_length=255)
    identity_url: str | None = Field(default=None, max_length=512)
    org_id: str | None = Field(default=None, max_length=18)
    sf_user_id: str | None = Field(default=None, max_length=18)
    sf_username: str | None = Field(default=None, max_length=255)
    permission_warnings: str | None = Field(default=None, sa_type=Text)
    linked_by: str | None = Field(default=None, max_length=32)
    notify_channel: str | None = Field(default=None, max_length=32)


class VccAccount(LinkFields, table=True):
    """One VCC account of one Slack workspace and its link to a Salesforce API user."""

    __tablename__ = "vcc_account"
    __table_args__ = (
        UniqueConstraint("team_id", "account_id", name="uq_vcc_account_team"),
        # The five-accounts-per-API-user rule, held by the database itself: each linked
        # account occupies one of its API user's five slots.
        UniqueConstraint("org_id", "sf_user_id", "api_user_slot", name="uq_vcc_account_slot"),
        CheckConstraint(
            f"api_user_slot BETWEEN 1 AND {MAX_ACCOUNTS_PER_API_USER}", name="ck_vcc_account_slot"
        ),
        Index("ix_vcc_account_api_user", "org_id", "sf_user_id"),
        Index("ix_vcc_account_next_check", "status", "next_check_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    # Enterprise Grid: the org whose installation (maybe org-wide) posts for this workspace.
    enterprise_id: str | None = Field(default=None, max_length=32)
    account_id: str = Field(max_length=64)
    status: str = Field(default=LinkStatus.UNLINKED, max_length=16)
    api_user_slot: int | None = Field(default=None)
    refresh_token_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    linked_at: datetime | None = Field(default=None, sa_column=_ts())
    health: str = Field(default=Health.UNKNOWN, max_length=16)
    health_reason: str | None = Field(default=None, sa_column=Column(Text))
    health_checked_at: datetime | None = Field(default=None, sa_column=_ts())
    # The claim on the next check, shared by the monitor and live checks: a replica that
    # moves next_check_at forward owns the next scheduled check; one that sets
    # check_lease_until owns the check under way until it records its result.
    next_check_at: datetime | None = Field(default=None, sa_column=_ts())
    check_lease_until: datetime | None = Field(default=None, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class ApiUser(SQLModel, table=True):
    """One Salesforce API user (org id + user id): the row linkers lock to take a slot."""

    __tablename__ = "salesforce_api_user"

    org_id: str = Field(max_length=18, primary_key=True)
    sf_user_id: str = Field(max_length=18, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class PendingToken(SQLModel, table=True):
    """A refresh token between the code exchange and the commit of its link.

    If the process dies in between, the next start revokes it, so no token stays live at
    Salesforce without the bot knowing it.
    """

    __tablename__ = "pending_token"

    id: int | None = Field(default=None, primary_key=True)
    login_host: str = Field(max_length=255)
    token_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    team_id: str = Field(max_length=32)
    account_id: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    # Revokes Salesforce did not answer: how many, and when to try the next one.
    revoke_tries: int = Field(default=0)
    next_try_at: datetime | None = Field(default=None, sa_column=_ts())


class AuditEvent(SQLModel, table=True):
    """What happened to a link, who did it, and when."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_account", "team_id", "account_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    account_id: str = Field(max_length=64)
    event: str = Field(max_length=32)
    actor: str = Field(max_length=32)  # a Slack user id, or "monitor" / "operator"
    org_id: str | None = Field(default=None, max_length=18)
    sf_username: str | None = Field(default=None, max_length=255)
    detail: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class LoginAttempt(SQLModel, table=True):
    """One login link sent to an admin; becomes an OAuth state once a browser opens it.

    Only hashes of the link token, the state and the browser cookie are kept, so a
    database dump cannot be replayed; the PKCE verifier and the click's response_url are
    needed in clear later and are therefore encrypted.
    """

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_account", "team_id", "account_id"),
        Index("ix_login_attempt_open", "closed_at", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    link_hash: str = Field(max_length=64, unique=True)
    state_hash: str | None = Field(default=None, max_length=64, unique=True)
    browser_hash: str | None = Field(default=None, max_length=64)
    code_verifier_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    team_id: str = Field(max_length=32)
    enterprise_id: str | None = Field(default=None, max_length=32)
    slack_user_id: str = Field(max_length=32)
    account_id: str = Field(max_length=64)
    environment: str = Field(max_length=16)
    login_host: str | None = Field(default=None, max_length=255)  # custom domains only
    channel_id: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    expires_at: datetime = Field(sa_column=_ts(nullable=False))
    consumed_at: datetime | None = Field(default=None, sa_column=_ts())
    withdrawn_at: datetime | None = Field(default=None, sa_column=_ts())  # unlinked meanwhile
    # Where the login was offered, so that its end is told there: the login DM, and the
    # click's response_url (it replaces "Check your DMs"; a capability, so encrypted).
    dm_channel: str | None = Field(default=None, max_length=32)
    dm_ts: str | None = Field(default=None, max_length=32)
    reply_url_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    # When its end was told (or claimed for telling): by its callback, or by a sweep.
    closed_at: datetime | None = Field(default=None, sa_column=_ts())


class OnceKey(SQLModel, table=True):
    """A thing done at most once across deliveries and replicas (a hashed key, kept a while)."""

    __tablename__ = "once_key"
    __table_args__ = (Index("ix_once_key_expires", "expires_at"),)

    key_hash: str = Field(max_length=64, primary_key=True)
    expires_at: datetime = Field(sa_column=_ts(nullable=False))


class HomeViewer(SQLModel, table=True):
    """Someone who opened the bot's Home tab: it is published again for them on a change."""

    __tablename__ = "home_viewer"
    __table_args__ = (Index("ix_home_viewer_opened", "team_id", "opened_at"),)

    team_id: str = Field(max_length=32, primary_key=True)
    user_id: str = Field(max_length=32, primary_key=True)
    enterprise_id: str | None = Field(default=None, max_length=32)
    opened_at: datetime = Field(sa_column=_ts(nullable=False))
    page: int = Field(default=0)  # the page they last turned to


class RateWindow(SQLModel, table=True):
    """How often someone did something in the current window (live checks per user)."""

    __tablename__ = "rate_window"

    key: str = Field(max_length=128, primary_key=True)
    window_start: datetime = Field(sa_column=_ts(nullable=False))
    count: int = Field(default=0)
