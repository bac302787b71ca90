"""The core composed in-process over its real collaborators, for fast lifecycle tests.

A database (SQLite file or PostgreSQL), the loopback fake Salesforce and a recording
notifier: no Slack, no web server. Build it inside the test's event loop, since the
shared Salesforce client belongs to the loop that uses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.fernet import Fernet

from bot.crypto import TokenCipher
from bot.domain import (
    AccountView,
    Environment,
    LinkError,
    LinkResult,
    LoginContext,
)
from bot.links import BrowserLogin, Callback, Core, LoginFlow, compose
from bot.salesforce import SalesforceClient
from storage import repository as repo
from storage.db import Database, create_db_engine, upgrade
from tests.fakes import FakeSalesforce
from tests.support.constants import ADMIN, CHANNEL, CLIENT_ID, CLIENT_SECRET, TEAM

CALLBACK = "http://127.0.0.1:9/salesforce/callback"  # never called: tests bring the code


@dataclass
class RecordingNotifier:
    """Implements bot.domain.Notifier by remembering what would have been said."""

    said: list[tuple[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[Any]:
        return [what for said, what in self.said if said == kind]

    async def linked(self, ctx: LoginContext, result: LinkResult) -> None:
        self.said.append(("linked", result))

    async def link_failed(self, ctx: LoginContext, error: LinkError) -> None:
        self.said.append(("link_failed", error))

    async def unlinked(self, account: AccountView, by_user: str) -> None:
        self.said.append(("unlinked", account))

    async def broken(self, account: AccountView) -> None:
        self.said.append(("broken", account))

    async def recovered(self, account: AccountView) -> None:
        self.said.append(("recovered", account))

    async def revoked_by_approval(
        self, ctx: LoginContext, accounts: list[AccountView], *, refused: bool
    ) -> None:
        self.said.append(("revoked_by_approval", accounts))

    async def connected_app_refused(
        self, user_id: str, accounts: list[AccountView], problem: str
    ) -> None:
        self.said.append(("connected_app_refused", (user_id, accounts, problem)))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Linker:
    """The whole login lifecycle, with the fake Salesforce playing the browser's part."""

    def __init__(self, login: LoginFlow) -> None:
        self._login = login

    async def __call__(self, fake: FakeSalesforce, account: str = "acme") -> LinkResult:
        started = await self._login.start(
            LoginContext(TEAM, ADMIN, account, Environment.PRODUCTION, CHANNEL)
        )
        opened = await self._login.open(started.url.rsplit("/", 1)[1], None)
        return await self._login.complete(authorize(opened))


@dataclass
class CoreUnderTest:
    """The composed core, and what the test watches it through."""

    db: Database
    notifier: RecordingNotifier
    clock: Clock
    core: Core

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)  # pending, health, login, links, background

    @property
    def link(self) -> Linker:
        return Linker(self.core.login)

    def leave_pending(self, fake: FakeSalesforce, account: str = "acme") -> None:
        """The linked account's token recorded as pending again, as a process that died
        between the exchange and the commit would leave it."""
        encrypted = self.db.call(
            lambda s: repo.get_account(s, team_id=TEAM, account_id=account).refresh_token_encrypted,
            write=False,
        )
        self.db.call(
            partial(
                repo.add_pending_token,
                login_host=fake.url,
                token_encrypted=encrypted,
                team_id=TEAM,
                account_id=account,
                now=self.clock(),
            )
        )


def authorize(opened: BrowserLogin) -> Callback:
    """Log in at the fake Salesforce and bring back what its redirect carries."""
    answer = httpx.get(opened.salesforce_url, follow_redirects=False, timeout=10)
    query = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
    return Callback(
        state=query.get("state"),
        browser_secret=opened.browser_secret,
        code=query.get("code"),
        error=query.get("error"),
        error_description=query.get("error_description"),
    )


@asynccontextmanager
async def core_for(
    database_url: str,
    fake: FakeSalesforce,
    *,
    db_timeout: float = 15.0,
    reuse_seconds: float = 30,
) -> AsyncIterator[CoreUnderTest]:
    db = Database(create_db_engine(database_url, timeout=db_timeout))
    upgrade(db.engine)
    salesforce = SalesforceClient(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=CALLBACK
    )
    notifier = RecordingNotifier()
    clock = Clock()
    core = compose(
        db=db,
        cipher=TokenCipher([Fernet.generate_key().decode()]),
        salesforce=salesforce,
        notifier=notifier,
        login_hosts={Environment.PRODUCTION: fake.url, Environment.SANDBOX: fake.url},
        public_url="http://127.0.0.1:9",
        check_interval=timedelta(hours=1),
        reuse_for=timedelta(seconds=reuse_seconds),
        clock=clock,
    )
    try:
        yield CoreUnderTest(db, notifier, clock, core)
    finally:
        await core.aclose()
        await salesforce.aclose()
        db.dispose()
