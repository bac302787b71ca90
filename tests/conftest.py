"""Shared fixtures: fake Slack and Salesforce on loopback, a database per test, the running bot.

The bot runs as it does in production: `bot.cli.build` composes it from Settings and uvicorn
serves it on a free port. Tests talk to it as Slack (signed requests) and as a browser.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.cli import Runtime, build
from bot.config import Settings, load_settings
from tests.fakes import FakeSalesforce, FakeSlack, SfUser

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
CLIENT_ID = "3MVG9-test-client-id"
CLIENT_SECRET = "test-client-secret-0123456789"
BOT_TOKEN = "xoxb-test-token"
TEAM = "T0001"
ADMIN = "UADMIN1"
MEMBER = "UMEMBER1"
CHANNEL = "C0NOTICE"

PG_HINT = (
    "set TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test to run "
    "these tests on PostgreSQL too (.ci/run does)"
)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port outside the kernel's ephemeral range.

    The bot's port is chosen before the bot binds it (the fakes must know its callback
    URL). A port from the ephemeral range could meanwhile be handed to one of the many
    sockets the tests open (fakes on port 0, outgoing connections); one below it never is.
    """
    low, _ = _ephemeral_range()
    candidates = list(range(max(1024, low - 12_000), low))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll a condition until it holds; fail with `what` if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


# ---- databases -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh, empty database for one test, on SQLite and (when available) PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vcc.db'}"
        return
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip(PG_HINT)
    name = f"vcc_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---- fakes ----------------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM)
    fake.add_user(ADMIN, is_admin=True, name="ada")
    fake.add_user(MEMBER, name="max")
    with fake:
        yield fake


@dataclass
class Salesforce:
    production: FakeSalesforce
    sandbox: FakeSalesforce
    api_user: SfUser
    sandbox_user: SfUser


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


class RunningBot:
    """uvicorn serving the composed bot in a thread, on a real socket; restartable."""

    def __init__(self, settings: Settings, salesforce_transport: Any = None) -> None:
        self.settings = settings
        self.salesforce_transport = salesforce_transport
        self.url = settings.public_url
        self.runtime: Runtime | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RunningBot:
        self.runtime = build(self.settings, salesforce_transport=self.salesforce_transport)
        config = uvicorn.Config(
            self.runtime.web,
            host=self.settings.host,
            port=self.settings.port,
            access_log=False,
            log_config=None,
            lifespan="on",  # runs the health monitor, as `vcc-bot serve` does
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_until(lambda: self._server is not None and self._server.started, 10, "uvicorn")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self.runtime is not None:
            self.runtime.db.dispose()
        self._server = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def bot(settings: Settings) -> Iterator[RunningBot]:
    running = RunningBot(settings).start()
    try:
        yield running
    finally:
        running.stop()


# ---- Slack's side: signed requests ----------------------------------------------------


def command_fields(
    fake: FakeSlack, text: str, *, user: str = ADMIN, channel: str = CHANNEL, team: str = TEAM
) -> dict[str, str]:
    """What Slack sends for `/vcc <text>` (form fields over HTTP, JSON in Socket Mode)."""
    return {
        "token": "verification-token-unused",
        "team_id": team,
        "team_domain": "acme",
        "channel_id": channel,
        "channel_name": "vcc-admins",
        "user_id": user,
        "user_name": "someone",
        "command": "/vcc",
        "text": text,
        "api_app_id": "A0VCC",
        "is_enterprise_install": "false",
        "response_url": fake.new_response_url(),
        "trigger_id": "123.456.abc",
    }


@dataclass
class SlackClient:
    """Sends what Slack sends: slash commands and block actions, signed."""

    bot: RunningBot
    fake: FakeSlack
    secret: str = SIGNING_SECRET
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def post(self, body: str, *, timestamp: int | None = None, sign: bool = True) -> httpx.Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sign:
            headers["X-Slack-Request-Timestamp"] = ts
            headers["X-Slack-Signature"] = SignatureVerifier(self.secret).generate_signature(
                timestamp=ts, body=body
            )
        return self.http.post(f"{self.bot.url}/slack/events", content=body, headers=headers)

    def command(
        self, text: str, *, user: str = ADMIN, channel: str = CHANNEL, team: str = TEAM
    ) -> str:
        """Run `/vcc <text>`; returns the response_url the bot answers on."""
        fields = command_fields(self.fake, text, user=user, channel=channel, team=team)
        response = self.post(urlencode(fields))
        assert response.status_code == 200, response.text
        return fields["response_url"]

    def click(
        self,
        action_id: str,
        value: str,
        *,
        user: str = ADMIN,
        channel: str = CHANNEL,
        team: str = TEAM,
    ) -> str:
        """Click a button on an ephemeral message; returns its response_url."""
        response_url = self.fake.new_response_url()
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": "someone", "name": "someone", "team_id": team},
            "api_app_id": "A0VCC",
            "token": "verification-token-unused",
            "container": {
                "type": "message",
                "message_ts": "1700000000.000100",
                "channel_id": channel,
                "is_ephemeral": True,
            },
            "trigger_id": "123.456.abc",
            "team": {"id": team, "domain": "acme"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "vcc-admins"},
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "blk",
                    "text": {"type": "plain_text", "text": "button"},
                    "value": value,
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        response = self.post(urlencode({"payload": json.dumps(payload)}))
        assert response.status_code == 200, response.text
        return response_url

    def submit_view(
        self,
        view: dict[str, Any],
        values: dict[str, dict[str, str]],
        *,
        user: str = ADMIN,
        team: str = TEAM,
    ) -> httpx.Response:
        """Submit a modal the bot opened; values[block_id][action_id] = typed text."""
        payload = {
            "type": "view_submission",
            "team": {"id": team, "domain": "acme"},
            "user": {"id": user, "username": "someone", "name": "someone", "team_id": team},
            "api_app_id": "A0VCC",
            "token": "verification-token-unused",
            "trigger_id": "123.456.def",
            "view": {
                **view,
                "id": "V00000001",
                "team_id": team,
                "state": {
                    "values": {
                        block: {
                            action: {"type": "plain_text_input", "value": text}
                            for action, text in actions.items()
                        }
                        for block, actions in values.items()
                    }
                },
                "hash": "1700000000.abcdef",
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }
        return self.post(urlencode({"payload": json.dumps(payload)}))

    def replies(self, response_url: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait until the bot has posted `count` replies to response_url; returns them all."""
        return self.fake.wait_for(
            lambda: (r := self.fake.responses(response_url)) and len(r) >= count and r,
            timeout,
        )


@pytest.fixture
def slack_client(bot: RunningBot, slack: FakeSlack) -> Iterator[SlackClient]:
    client = SlackClient(bot, slack)
    yield client
    client.http.close()


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    """The admin's browser: keeps cookies, does not follow redirects by itself."""
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        yield client


def text_of(message: dict[str, Any]) -> str:
    """All visible text in a message: its text and every text field of its blocks."""
    parts = [message.get("text") or ""]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    parts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("blocks") or [])
    return "\n".join(parts)


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's buttons by action_id."""
    found = {}
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("type") == "button":
                found[element["action_id"]] = element
    return found
