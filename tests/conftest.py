"""Shared fixtures: fake Slack and Salesforce on loopback, a database per test, the running bot.

The bot runs as it does in production: `bot.cli.build` composes it from Settings and uvicorn
serves it on a free port. Tests talk to it as Slack (signed requests) and as a browser.
What the fixtures build (and the tests import) lives in tests/support/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from bot.config import Settings, load_settings
from tests.fakes import FakeSalesforce, FakeSlack
from tests.support import (
    ADMIN,
    BOT_TOKEN,
    CLIENT_ID,
    CLIENT_SECRET,
    MEMBER,
    PG_HINT,
    SIGNING_SECRET,
    TEAM,
    RunningBot,
    Salesforce,
    SlackClient,
    free_port,
)
from tests.support.database import fresh_postgres
from tests.support.slack_client import client as http_client

# ---- databases -------------------------------------------------------------------------

# Read at collection: without a PostgreSQL server the tests have no [postgresql] variant.
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
DATABASES = ["sqlite", "postgresql"] if TEST_DATABASE_URL else ["sqlite"]


def pytest_report_header() -> str:
    if TEST_DATABASE_URL:
        return "databases: SQLite, PostgreSQL (TEST_DATABASE_URL)"
    return f"databases: SQLite only; {PG_HINT}"


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh, empty database for one test, on SQLite and (when available) PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vcc.db'}"
        return
    assert TEST_DATABASE_URL, "the postgresql parameter exists only when TEST_DATABASE_URL is set"
    with fresh_postgres(TEST_DATABASE_URL) as url:
        yield url


# ---- fakes ----------------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM)
    fake.add_user(ADMIN, is_admin=True, name="ada")
    fake.add_user(MEMBER, name="max")
    with fake:
        yield fake


@pytest.fixture
def public_port() -> int:
    return free_port()


@pytest.fixture
def salesforce(public_port: int) -> Iterator[Salesforce]:
    callback = f"http://127.0.0.1:{public_port}/salesforce/callback"
    prod = FakeSalesforce(CLIENT_ID, CLIENT_SECRET, redirect_uri=callback, name="production")
    sandbox = FakeSalesforce(CLIENT_ID, CLIENT_SECRET, redirect_uri=callback, name="sandbox")
    with prod, sandbox:
        user = prod.add_user("00D000000000001AAA", "005000000000001AAA", "vcc-api@acme.example")
        sb_user = sandbox.add_user(
            "00D000000000002AAA", "005000000000002AAA", "vcc-api@acme.example.uat"
        )
        prod.login_as = user
        sandbox.login_as = sb_user
        yield Salesforce(prod, sandbox, user, sb_user)


# ---- the bot ---------------------------------------------------------------------------


@pytest.fixture
def settings(
    database_url: str, slack: FakeSlack, salesforce: Salesforce, public_port: int
) -> Settings:
    return load_settings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url,
        salesforce_client_id=CLIENT_ID,
        salesforce_client_secret=CLIENT_SECRET,
        salesforce_production_url=salesforce.production.url,
        salesforce_sandbox_url=salesforce.sandbox.url,
        public_url=f"http://127.0.0.1:{public_port}",
        database_url=database_url,
        vcc_encryption_key=Fernet.generate_key().decode(),
        host="127.0.0.1",
        port=public_port,
        # Most tests are about what a live check finds, so none is reused here;
        # test_core_lifecycles.py covers reuse at its default.
        vcc_check_reuse=0,
    )


@pytest.fixture
def bot(settings: Settings) -> Iterator[RunningBot]:
    running = RunningBot(settings).start()
    try:
        yield running
    finally:
        running.stop()


# ---- Slack's side and the browser ------------------------------------------------------


@pytest.fixture
def slack_client(bot: RunningBot, slack: FakeSlack) -> Iterator[SlackClient]:
    client = SlackClient(bot, slack)
    yield client
    client.http.close()


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    """The admin's browser: keeps cookies, does not follow redirects by itself."""
    with http_client(follow_redirects=False) as browser:
        yield browser
