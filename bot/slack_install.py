"""Many workspaces: where each workspace's bot token is kept, and how a client is found.

Installations and install states live in the bot's own database, in slack_sdk's SQLAlchemy
stores (tables created by our migration 0006). Those stores keep tokens in clear; the thin
wrappers here encrypt every token with VCC_ENCRYPTION_KEY before slack_sdk sees the row,
and run slack_sdk's blocking calls in worker threads, off the event loop.

`SlackClients` is what the bot uses outside a Slack request (the Salesforce callback, the
monitor's notices): one workspace's client, found by team (and enterprise), with its token
rotated first when Slack's token rotation is on.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError, SlackTokenRotationError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Engine, and_, desc, select, update

from bot.crypto import TokenCipher, UndecryptableToken

log = logging.getLogger(__name__)

Found = TypeVar("Found", Bot, Installation)

# What the bot asks Slack for at install (manifest.yml's oauth_config.scopes.bot; a test
# keeps the two in step).
BOT_SCOPES = (
    "commands",
    "chat:write",
    "chat:write.public",
    "im:write",
    "users:read",
    # conversations.info, read only: whether the bot can post in a notification channel
    # (/vcc doctor), without posting there. Public channels need the first, private the second.
    "channels:read",
    "groups:read",
)
TOKEN_FIELDS = ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token")
# Rotate a bot token this long before it expires (bolt's default for requests, too).
ROTATE_MINUTES_BEFORE = 120


def _with_tokens(entity: Found, change: Callable[[str], str]) -> Found:
    changed = copy.copy(entity)
    for name in TOKEN_FIELDS:
        value = getattr(changed, name, None)
        if value:
            setattr(changed, name, change(value))
    return changed


class EncryptedInstallationStore(AsyncInstallationStore):
    """slack_sdk's SQLAlchemyInstallationStore with its tokens encrypted at rest.

    Reads and writes go to two engines: writers take SQLite's write lock when they begin
    (storage.db), readers never wait for one.
    """

    def __init__(
        self, *, client_id: str, engine: Engine, write_engine: Engine, cipher: TokenCipher
    ) -> None:
        self._reader = SQLAlchemyInstallationStore(client_id=client_id, engine=engine, logger=log)
        self._writer = SQLAlchemyInstallationStore(
            client_id=client_id, engine=write_engine, logger=log
        )
        self._client_id = client_id
        self._cipher = cipher

    @property
    def logger(self) -> logging.Logger:
        return log

    def _open(self, entity: Found | None) -> Found | None:
        if entity is None:
            return None
        try:
            return _with_tokens(entity, self._cipher.decrypt)
        except UndecryptableToken:
            # The key that encrypted it was removed: the workspace must install the app again.
            log.error(
                "no key of VCC_ENCRYPTION_KEY decrypts the Slack token of team %s",
                entity.team_id or entity.enterprise_id,
            )
            return None

    async def async_save(self, installation: Installation) -> None:
        sealed = _with_tokens(installation, self._cipher.encrypt)
        await asyncio.to_thread(self._writer.save, sealed)

    async def async_save_bot(self, bot: Bot) -> None:
        await asyncio.to_thread(self._writer.save_bot, _with_tokens(bot, self._cipher.encrypt))

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        found = await asyncio.to_thread(
            self._reader.find_bot,
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        return self._open(found)

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        found = await asyncio.to_thread(
            self._reader.find_installation,
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            is_enterprise_install=is_enterprise_install,
        )
        return self._open(found)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await asyncio.to_thread(
            self._writer.delete_bot, enterprise_id=enterprise_id, team_id=team_id
        )

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        await asyncio.to_thread(
            self._writer.delete_installation,
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
        )

    async def find_workspace_bot(self, team_id: str, enterprise_id: str | None) -> Bot | None:
        """The bot that serves a workspace: its own install, else its org's org-wide one.

        A workspace recorded without its enterprise (an account imported before) is found
        by its team id alone: Slack's team ids are unique across enterprises.
        """
        if enterprise_id is not None:
            bot = await self.async_find_bot(enterprise_id=enterprise_id, team_id=team_id)
            if bot is None:
                bot = await self.async_find_bot(
                    enterprise_id=enterprise_id, team_id=None, is_enterprise_install=True
                )
            return bot
        return self._open(await asyncio.to_thread(self._latest_bot_of_team, team_id))

    def _latest_bot_of_team(self, team_id: str) -> Bot | None:
        c = self._reader.bots.c
        query = (
            select(self._reader.bots)
            .where(
                and_(c.client_id == self._client_id, c.team_id == team_id, c.bot_token.is_not(None))
            )
            .order_by(desc(c.installed_at))
            .limit(1)
        )
        with self._reader.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else SQLAlchemyInstallationStore.build_bot_entity(row)

    def installed_teams(self) -> list[dict[str, Any]]:
        """Every workspace (or org) with a bot token, newest install first; for operators."""
        c = self._reader.bots.c
        query = (
            select(c.enterprise_id, c.team_id, c.team_name, c.is_enterprise_install, c.installed_at)
            .where(and_(c.client_id == self._client_id, c.bot_token.is_not(None)))
            .order_by(desc(c.installed_at))
        )
        with self._reader.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        seen: set[tuple[str | None, str | None]] = set()
        latest = []
        for row in rows:
            key = (row["enterprise_id"], row["team_id"])
            if key not in seen:
                seen.add(key)
                latest.append(row)
        return latest

    def rotate_keys(self, cipher: TokenCipher) -> tuple[int, list[str]]:
        """Re-encrypt every stored Slack token with the first key (`vcc-bot rotate-key`).

        Returns how many rows were re-encrypted, and the workspaces whose tokens no key
        decrypts (they must install the app again).
        """
        rotated, lost = 0, []
        for table in (self._writer.installations, self._writer.bots):
            columns = [table.c[name] for name in TOKEN_FIELDS if name in table.c]
            with self._writer.engine.begin() as conn:
                rows = conn.execute(select(table.c.id, table.c.team_id, *columns)).mappings()
                for row in list(rows):
                    values = {}
                    try:
                        for column in columns:
                            if row[column.name]:
                                values[column.name] = cipher.rotate(row[column.name])
                    except UndecryptableToken:
                        lost.append(row["team_id"] or "an org-wide install")
                        continue
                    if values:
                        conn.execute(update(table).where(table.c.id == row["id"]).values(values))
                        rotated += 1
        return rotated, sorted(set(lost))


class DatabaseStateStore(AsyncOAuthStateStore):
    """slack_sdk's SQLAlchemy state store, off the event loop: an install started through
    one replica completes through any other."""

    def __init__(self, *, engine: Engine, expiration_seconds: int = 600) -> None:
        self._store = SQLAlchemyOAuthStateStore(
            expiration_seconds=expiration_seconds, engine=engine, logger=log
        )

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        return await asyncio.to_thread(self._store.issue)

    async def async_consume(self, state: str) -> bool:
        return await asyncio.to_thread(self._store.consume, state)


class SlackClients(Protocol):
    """A workspace's Web API client, or None when the app is not installed there."""

    async def client_for(
        self, team_id: str, enterprise_id: str | None
    ) -> AsyncWebClient | None: ...


@dataclass
class OneWorkspace:
    """SLACK_BOT_TOKEN: one workspace, one client."""

    client: AsyncWebClient

    async def client_for(self, team_id: str, enterprise_id: str | None) -> AsyncWebClient | None:
        return self.client


class OneRotationAtATime(AsyncInstallationStoreAuthorize):
    """bolt's authorization from stored installations, one request at a time per
    installation.

    Slack revokes a refresh token once it is used (docs.slack.dev/authentication/using-
    token-rotation). Requests that arrive together while the token is due would each
    rotate it, and all but the first be refused: bolt then drops them (after the edge's
    200, so nobody hears) or tells the user to reinstall the app. One at a time, the next
    request finds the token the first one stored. A request that still finds nothing is
    looked up once more: another replica may have rotated the token meanwhile, and
    stored its result.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._turns: dict[tuple[str | None, str | None], asyncio.Lock] = {}

    async def __call__(  # type: ignore[override]
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **actor: Any,
    ) -> AuthorizeResult | None:
        turn = self._turns.setdefault((enterprise_id, team_id), asyncio.Lock())
        async with turn:
            for _ in range(2):
                result = await super().__call__(
                    context=context,
                    enterprise_id=enterprise_id,
                    team_id=team_id,
                    user_id=user_id,
                    **actor,
                )
                if result is not None:
                    return result
            return None


class Installed:
    """Each workspace's client from its installation, its token rotated when due."""

    def __init__(
        self,
        *,
        store: EncryptedInstallationStore,
        client_id: str,
        client_secret: str,
        base_url: str,
        retry_handlers: Sequence[AsyncRetryHandler],
        session: Callable[[], aiohttp.ClientSession | None] = lambda: None,
    ) -> None:
        self._store = store
        self._session = session
        self._base_url = base_url
        self._retry_handlers = list(retry_handlers)
        self._rotator = AsyncTokenRotator(
            client_id=client_id,
            client_secret=client_secret,
            client=AsyncWebClient(base_url=base_url, retry_handlers=self._retry_handlers),
        )

    async def client_for(self, team_id: str, enterprise_id: str | None) -> AsyncWebClient | None:
        bot = await self._store.find_workspace_bot(team_id, enterprise_id)
        if bot is None:
            return None
        bot = await self._rotated(bot, team_id, enterprise_id)
        return AsyncWebClient(
            token=bot.bot_token,
            base_url=self._base_url,
            retry_handlers=self._retry_handlers,
            session=self._session(),
        )

    async def _rotated(self, bot: Bot, team_id: str, enterprise_id: str | None) -> Bot:
        try:
            fresh = await self._rotator.perform_bot_token_rotation(
                bot=bot, minutes_before_expiration=ROTATE_MINUTES_BEFORE
            )
        except (SlackApiError, SlackTokenRotationError) as exc:
            # Another replica may have used the refresh token first: its result is stored.
            log.warning("could not rotate the Slack token of team %s: %s", team_id, exc)
            again = await self._store.find_workspace_bot(team_id, enterprise_id)
            return again or bot
        if fresh is None:
            return bot
        await self._store.async_save_bot(fresh)
        return fresh
