"""SQLModel tables. Secrets are stored only encrypted (the refresh token, the PKCE verifier)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Column, DateTime, Dialect, Index, Text, TypeDecorator, UniqueConstraint
from sqlmodel import Field, SQLModel


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

    @property
    def label(self) -> str:
        return self.value.capitalize()


class VccAccount(SQLModel, table=True):
    """One VCC account of one Slack workspace and its link to a Salesforce API user."""

    __tablename__ = "vcc_account"
    __table_args__ = (
        UniqueConstraint("team_id", "account_id", name="uq_vcc_account_team"),
        # The five-accounts-per-API-user rule counts by this pair.
        Index("ix_vcc_account_api_user", "org_id", "sf_user_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    account_id: str = Field(max_length=64)
    status: str = Field(default=LinkStatus.UNLINKED, max_length=16)
    environment: str | None = Field(default=None, max_length=16)
    login_host: str | None = Field(default=None, max_length=255)
    instance_url: str | None = Field(default=None, max_length=255)
    identity_url: str | None = Field(default=None, max_length=512)
    org_id: str | None = Field(default=None, max_length=18)
    sf_user_id: str | None = Field(default=None, max_length=18)
    sf_username: str | None = Field(default=None, max_length=255)
    refresh_token_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    permission_warnings: str | None = Field(default=None, sa_column=Column(Text))
    linked_by: str | None = Field(default=None, max_length=32)
    linked_at: datetime | None = Field(default=None, sa_column=_ts())
    notify_channel: str | None = Field(default=None, max_length=32)
    health: str = Field(default=Health.UNKNOWN, max_length=16)
    health_reason: str | None = Field(default=None, sa_column=Column(Text))
    health_checked_at: datetime | None = Field(default=None, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))


class LoginAttempt(SQLModel, table=True):
    """One login link sent to an admin; becomes an OAuth state once a browser opens it.

    Only hashes of the link token, the state and the browser cookie are kept, so a
    database dump cannot be replayed; the PKCE verifier is needed in clear later and is
    therefore encrypted.
    """

    __tablename__ = "login_attempt"

    id: int | None = Field(default=None, primary_key=True)
    link_hash: str = Field(max_length=64, unique=True)
    state_hash: str | None = Field(default=None, max_length=64, unique=True)
    browser_hash: str | None = Field(default=None, max_length=64)
    code_verifier_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    team_id: str = Field(max_length=32)
    slack_user_id: str = Field(max_length=32)
    account_id: str = Field(max_length=64)
    environment: str = Field(max_length=16)
    channel_id: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts(nullable=False))
    expires_at: datetime = Field(sa_column=_ts(nullable=False))
    consumed_at: datetime | None = Field(default=None, sa_column=_ts())
