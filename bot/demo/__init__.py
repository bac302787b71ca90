"""`vcc-bot demo`: the real bot against stand-ins of Slack and Salesforce, on this machine.

The bot is composed by `bot.cli.build` from Settings, exactly as `vcc-bot serve` composes
it, and served by uvicorn the same way; only its settings point at the stand-ins (the
loopback fakes the tests use, from bot.standins) and at a throwaway SQLite file. Nothing
needs configuring and nothing leaves 127.0.0.1. A page plays Slack's side (bot.demo.side):
type `/vcc link acme`, click the buttons, open the login link the bot DMs, log in on the
stand-in Salesforce page, and watch the notices and the Home tab.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import tempfile
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from cryptography.fernet import Fernet

from bot.config import Settings, load_settings
from bot.demo.side import SlackSide, create_side_app
from bot.standins import FakeSalesforce, FakeSlack

if TYPE_CHECKING:
    from bot.cli import Runtime

log = logging.getLogger(__name__)

TEAM = "T0DEMO"
ADMIN = "U0DEMOADMIN"
MEMBER = "U0DEMOMEMBER"
CHANNEL = "C0VCCADMINS"
CLIENT_ID = "3MVG9-demo-consumer-key"
CLIENT_SECRET = "demo-consumer-secret"  # noqa: S105 - the stand-in's own, on loopback


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class StandIns:
    slack: FakeSlack
    production: FakeSalesforce
    sandbox: FakeSalesforce


@contextlib.contextmanager
def stand_ins() -> Iterator[StandIns]:
    """Slack with one workspace, an admin and a member; Salesforce Production and Sandbox,
    each with an API user, showing their login and Allow pages to a browser."""
    slack = FakeSlack(team_id=TEAM)  # its bot token is minted for this run
    slack.add_user(ADMIN, is_admin=True, name="you")
    slack.add_user(MEMBER, name="a colleague")
    production = FakeSalesforce(CLIENT_ID, CLIENT_SECRET, name="production")
    sandbox = FakeSalesforce(CLIENT_ID, CLIENT_SECRET, name="sandbox")
    for fake, org, host in (
        (production, "00D5g000001DEMOA", "acme"),
        (sandbox, "00D7x000002DEMOB", "acme--uat"),
    ):
        fake.browser_pages = True
        fake.login_as = fake.add_user(
            org, f"005{org[3:]}", f"vcc-api@{host}.example", display_name="VCC API user"
        )
    with slack, production, sandbox:
        yield StandIns(slack, production, sandbox)


def demo_settings(
    fakes: StandIns, port: int, database: Path, signing_secret: str, interval: int = 60
) -> Settings:
    return load_settings(
        _env_file=None,
        slack_bot_token=fakes.slack.bot_token,
        slack_signing_secret=signing_secret,
        slack_api_url=fakes.slack.api_url,
        salesforce_client_id=CLIENT_ID,
        salesforce_client_secret=CLIENT_SECRET,
        salesforce_production_url=fakes.production.url,
        salesforce_sandbox_url=fakes.sandbox.url,
        public_url=f"http://127.0.0.1:{port}",
        database_url=f"sqlite:///{database}",
        vcc_encryption_key=Fernet.generate_key().decode(),
        host="127.0.0.1",
        port=port,
        vcc_health_interval=interval,
    )


class _Quiet(uvicorn.Server):
    """The Slack side's server: the bot's own server handles Ctrl-C for both."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Demo:
    """The bot, composed as `serve` composes it, and the Slack side's page, not yet served."""

    fakes: StandIns
    runtime: Runtime
    side: SlackSide
    bot_server: uvicorn.Server
    side_server: uvicorn.Server

    @property
    def bot_url(self) -> str:
        return self.runtime.settings.public_url

    @property
    def side_url(self) -> str:
        return f"http://127.0.0.1:{self.side_server.config.port}/"

    async def serve(self) -> None:
        side = asyncio.create_task(self.side_server.serve())
        try:
            await self.bot_server.serve()
        finally:
            self.side_server.should_exit = True
            await side

    def stop(self) -> None:
        self.bot_server.should_exit = True


def compose(
    fakes: StandIns, folder: Path, *, port: int = 0, side_port: int = 0, interval: int = 60
) -> Demo:
    # The composition root, as `serve` uses it (imported here: bot.cli imports this module).
    from bot.cli import build, uvicorn_config

    port = port or free_port()
    secret = secrets.token_hex(16)
    settings = demo_settings(fakes, port, folder / "demo.db", secret, interval)
    for fake in (fakes.production, fakes.sandbox):
        fake.redirect_uri = settings.salesforce_callback_url  # the connected app's
    runtime = build(settings)
    side = SlackSide(
        fakes.slack,
        bot_url=settings.public_url,
        signing_secret=secret,
        team=TEAM,
        user=ADMIN,
        channel=CHANNEL,
    )
    side_config = uvicorn.Config(
        create_side_app(side),
        host="127.0.0.1",
        port=side_port or free_port(),
        access_log=False,
        log_config=None,
    )
    bot_server = uvicorn.Server(uvicorn_config(runtime))
    return Demo(fakes, runtime, side, bot_server, _Quiet(side_config))


def run(*, port: int = 0, side_port: int = 0, open_browser: bool = True) -> int:
    """Run the demo until Ctrl-C; returns the exit status."""
    from bot.cli import configure_logging, quiet_signals

    with tempfile.TemporaryDirectory(prefix="vcc-demo-") as tmp, stand_ins() as fakes:
        demo = compose(fakes, Path(tmp), port=port, side_port=side_port)
        configure_logging(demo.runtime.settings.log_level)
        print(
            f"vcc-bot demo: the real bot at {demo.bot_url}, against stand-ins of Slack and "
            f"Salesforce on 127.0.0.1.\nOpen {demo.side_url} and type /vcc link acme. "
            "Ctrl-C stops it; everything it stored goes with it.",
            flush=True,
        )
        if open_browser:
            webbrowser.open(demo.side_url)
        quiet_signals()
        try:
            asyncio.run(demo.serve())
        finally:
            demo.runtime.db.dispose()
    return 0
