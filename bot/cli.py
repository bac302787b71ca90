"""`vcc-bot` commands, and the one place that reads Settings and wires everything together."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass

import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette

from bot.admins import AdminPolicy
from bot.config import Settings, SettingsError, load_settings
from bot.crypto import TokenCipher, generate_key
from bot.links import LinkService
from bot.notify import SlackNotifier
from bot.salesforce import SalesforceClient
from bot.slack_app import Services, create_app
from bot.web import create_web_app
from storage.db import Database, create_db_engine, upgrade
from storage.models import Environment

log = logging.getLogger("vcc")


@dataclass
class Runtime:
    settings: Settings
    db: Database
    links: LinkService
    bolt: AsyncApp
    web: Starlette


def build(settings: Settings, *, socket_mode: bool = False) -> Runtime:
    """Compose the bot from settings: database (migrated), clients, core, Slack and web apps."""
    engine = create_db_engine(settings.database_url)
    upgrade(engine)
    db = Database(engine)
    slack_client = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        # slack_sdk retries only connection errors by default; also wait out 429s.
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
    )
    links = LinkService(
        db=db,
        cipher=TokenCipher(settings.encryption_keys),
        salesforce=SalesforceClient(
            client_id=settings.salesforce_client_id,
            client_secret=settings.salesforce_client_secret.get_secret_value(),
            redirect_uri=settings.salesforce_callback_url,
        ),
        notifier=SlackNotifier(slack_client),
        login_hosts={
            Environment.PRODUCTION: settings.salesforce_production_url,
            Environment.SANDBOX: settings.salesforce_sandbox_url,
        },
        public_url=settings.public_url,
    )
    bolt = create_app(
        client=slack_client,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        services=Services(links=links, admins=AdminPolicy(slack_client, settings.vcc_admin_users)),
    )
    web = create_web_app(
        links=links,
        db=db,
        slack=None if socket_mode else AsyncSlackRequestHandler(bolt),
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        cookie_secure=settings.cookie_secure,
    )
    return Runtime(settings=settings, db=db, links=links, bolt=bolt, web=web)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # These log full request URLs (and, at DEBUG, bodies): keep them quiet.
    for noisy in (
        "httpx",
        "httpcore",
        "httpx2",
        "httpcore2",
        "slack_sdk",
        "authlib",
        "uvicorn.access",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def uvicorn_config(runtime: Runtime) -> uvicorn.Config:
    return uvicorn.Config(
        runtime.web,
        host=runtime.settings.host,
        port=runtime.settings.port,
        access_log=False,  # bot.web.AccessLog logs requests without query strings
        log_config=None,
        server_header=False,
    )


async def _serve_socket_mode(runtime: Runtime) -> None:
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    app_token = runtime.settings.slack_app_token
    assert app_token is not None
    handler = AsyncSocketModeHandler(runtime.bolt, app_token.get_secret_value())
    await handler.connect_async()
    log.info("connected to Slack in Socket Mode")
    try:
        await uvicorn.Server(uvicorn_config(runtime)).serve()
    finally:
        await handler.close_async()


def serve(socket_mode: bool) -> int:
    settings = load_settings(socket_mode=socket_mode)
    configure_logging(settings.log_level)
    runtime = build(settings, socket_mode=socket_mode)
    log.info(
        "vcc-bot listening on %s:%s (public URL %s)",
        settings.host,
        settings.port,
        settings.public_url,
    )
    try:
        if socket_mode:
            asyncio.run(_serve_socket_mode(runtime))
        else:
            uvicorn.Server(uvicorn_config(runtime)).run()
    finally:
        runtime.db.dispose()
    return 0


def db_upgrade() -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    engine = create_db_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    print("database is up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vcc-bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the bot's HTTP server")
    serve_cmd.add_argument(
        "--socket-mode",
        action="store_true",
        help="receive Slack's requests over Socket Mode (SLACK_APP_TOKEN); no public URL needed",
    )
    sub.add_parser("keygen", help="print a new VCC_ENCRYPTION_KEY")
    db_cmd = sub.add_parser("db", help="database maintenance")
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply database migrations")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            print(generate_key())
            return 0
        if args.command == "db":
            return db_upgrade()
        return serve(args.socket_mode)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
