"""Settings: every environment variable the bot reads, validated in one place."""

from __future__ import annotations

import re
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.urls import transport_ok

SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
SLACK_TOKEN = re.compile(r"(xoxb|xapp)-[0-9A-Za-z-]{6,}")


class SettingsError(Exception):
    """Raised with every problem at once, so an operator fixes them in one go."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            "vcc-bot cannot start. Fix these settings in the environment or in .env "
            f"(copy .env.example to .env to start from a template):\n{listing}"
        )


def _http_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an https URL, got {value!r}")
    if not transport_ok(value):
        # Tokens and codes travel through these URLs: plain http only on this machine.
        raise ValueError(f"must use https (plain http only for localhost), got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{name} must not carry a query or fragment")
    return value.rstrip("/")


class DatabaseSettings(BaseSettings):
    """What operator commands that only touch the database need."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    database_url: str = "sqlite:///vcc-bot.db"
    # How long a statement may wait for a lock or run before the bot says "try again".
    database_timeout: float = Field(default=15.0, gt=0, le=300)
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return v.upper()


class Settings(DatabaseSettings):
    # One workspace: its bot token. Many: the app's client id and secret, and Slack's
    # OAuth install (GET /slack/install) stores each workspace's token in the database.
    # (Declared after the client's id and secret: its validator reads them.)
    slack_client_id: str | None = None
    slack_client_secret: SecretStr | None = None
    slack_bot_token: SecretStr | None = Field(default=None, validate_default=True)
    slack_signing_secret: SecretStr
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    salesforce_client_id: str
    salesforce_client_secret: SecretStr
    salesforce_production_url: str = "https://login.salesforce.com"
    salesforce_sandbox_url: str = "https://test.salesforce.com"
    public_url: str
    vcc_encryption_key: SecretStr
    vcc_admin_users: Annotated[frozenset[str], NoDecode] = frozenset()
    host: str = "0.0.0.0"  # noqa: S104 - a server in a container listens on all interfaces
    port: int = Field(default=3000, ge=1, le=65535)
    vcc_health_interval: int = Field(default=3600, ge=1)
    # /vcc status reuses a live check younger than this (each check costs API calls).
    vcc_check_reuse: int = Field(default=30, ge=0, le=3600)
    # On SIGTERM: seconds to finish the requests in flight, then as long again for the
    # work they started (token custody, checks) before the process exits.
    shutdown_timeout: int = Field(default=10, ge=1, le=120)

    @field_validator("slack_client_id", "slack_client_secret")
    @classmethod
    def _blank_is_unset(cls, v: SecretStr | str | None) -> SecretStr | str | None:
        value = v.get_secret_value() if isinstance(v, SecretStr) else v
        return v if value and value.strip() else None

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        value = v.get_secret_value() if v is not None else ""
        oauth = [info.data.get("slack_client_id"), info.data.get("slack_client_secret")]
        if value and any(oauth):
            raise ValueError(
                "set either SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
                "SLACK_CLIENT_SECRET (installs into many workspaces), not both"
            )
        if not value:
            if all(oauth):
                return None
            raise ValueError(
                "missing (or, to install into many workspaces, set both SLACK_CLIENT_ID "
                "and SLACK_CLIENT_SECRET)"
            )
        if not value.startswith("xoxb-") or not SLACK_TOKEN.fullmatch(value):
            raise ValueError("must be a bot token (xoxb-…) from the app's OAuth & Permissions page")
        return v

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, v: SecretStr | None) -> SecretStr | None:
        value = v.get_secret_value() if v is not None else ""
        if value and (not value.startswith("xapp-") or not SLACK_TOKEN.fullmatch(value)):
            raise ValueError("must be an app-level token (xapp-…) with connections:write")
        return v if value else None

    @field_validator("slack_signing_secret", "salesforce_client_secret", "salesforce_client_id")
    @classmethod
    def _not_empty(cls, v: SecretStr | str) -> SecretStr | str:
        value = v.get_secret_value() if isinstance(v, SecretStr) else v
        if not value.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        return _http_url(v, "SLACK_API_URL") + "/"

    @field_validator("salesforce_production_url", "salesforce_sandbox_url", "public_url")
    @classmethod
    def _urls(cls, v: str) -> str:
        return _http_url(v, "URL")

    @field_validator("vcc_encryption_key")
    @classmethod
    def _fernet_keys(cls, v: SecretStr) -> SecretStr:
        keys = [k.strip() for k in v.get_secret_value().split(",") if k.strip()]
        if not keys:
            raise ValueError("needs at least one key (run `vcc-bot keygen`)")
        for position, key in enumerate(keys, start=1):
            try:
                Fernet(key)
            except (ValueError, TypeError):
                raise ValueError(
                    f"key {position} is not a valid Fernet key (run `vcc-bot keygen`)"
                ) from None
        return SecretStr(",".join(keys))

    @field_validator("vcc_admin_users", mode="before")
    @classmethod
    def _admin_users(cls, v: object) -> frozenset[str]:
        if isinstance(v, str):
            v = [u.strip() for u in v.split(",") if u.strip()]
        if not isinstance(v, list | tuple | set | frozenset):
            raise ValueError("must be Slack user ids separated by commas")
        users = frozenset(str(u) for u in v)
        bad = sorted(u for u in users if not SLACK_USER_ID.fullmatch(u))
        if bad:
            raise ValueError(f"not Slack user ids: {', '.join(bad)}")
        return users

    @property
    def many_workspaces(self) -> bool:
        return self.slack_bot_token is None

    @property
    def slack_install_url(self) -> str:
        return f"{self.public_url}/slack/install"

    @property
    def slack_redirect_url(self) -> str:
        return f"{self.public_url}/slack/oauth_redirect"

    @property
    def slack_authorize_url(self) -> str:
        # https://slack.com/api/ → https://slack.com/oauth/v2/authorize (and the same for a
        # stand-in of Slack on another host).
        return self.slack_api_url.removesuffix("/").removesuffix("/api") + "/oauth/v2/authorize"

    @property
    def encryption_keys(self) -> list[str]:
        return self.vcc_encryption_key.get_secret_value().split(",")

    @property
    def salesforce_callback_url(self) -> str:
        return f"{self.public_url}/salesforce/callback"

    @property
    def cookie_secure(self) -> bool:
        return self.public_url.startswith("https://")


class SocketModeSettings(Settings):
    """Socket Mode also needs the app-level token; checked with everything else."""

    slack_app_token: SecretStr  # type: ignore[assignment]

    @field_validator("slack_app_token")
    @classmethod
    def _required(cls, v: SecretStr | None) -> SecretStr:
        if v is None:
            raise ValueError("must not be empty: socket mode needs an xapp- token")
        return v

    @model_validator(mode="after")
    def _one_workspace(self) -> SocketModeSettings:
        if self.many_workspaces:
            raise ValueError(
                "SLACK_BOT_TOKEN: socket mode serves one workspace; installs into many "
                "workspaces (SLACK_CLIENT_ID) need the HTTP endpoint"
            )
        return self


S = TypeVar("S", bound=DatabaseSettings)


def load_settings(*, socket_mode: bool = False, **overrides: object) -> Settings:
    """Build the bot's Settings, or raise one readable SettingsError naming every problem."""
    return load(SocketModeSettings if socket_mode else Settings, **overrides)


def load(model: type[S], **overrides: object) -> S:
    """Build any settings model, turning pydantic's report into one SettingsError."""
    try:
        return model(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a rule across settings names them itself
                problems.append(message)
                continue
            name = str(err["loc"][0]).upper()
            problems.append(
                f"{name}: missing" if err["type"] == "missing" else f"{name}: {message}"
            )
        raise SettingsError(problems) from None
