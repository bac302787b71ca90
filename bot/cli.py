"""`vcc-bot` commands, and the one place that reads Settings and wires everything together."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import httpx2
import uvicorn
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette

from bot.admins import AdminPolicy
from bot.config import DatabaseSettings, Settings, SettingsError, load, load_settings
from bot.crypto import TokenCipher, generate_key
from bot.doctor import NOT_INSTALLED, ChannelInfo, ChannelLookup, Doctor, DoctorReport, render_text
from bot.domain import AccountView, Environment, LinkError, parse_account_id
from bot.home import HomeTab
from bot.links import Background, Core, LinkHealth, LinkService, LoginFlow, compose
from bot.logs import EscapingFormatter
from bot.maintenance import (
    LegacyImportError,
    RotationReport,
    export_audit,
    import_legacy,
    rotate_keys,
)
from bot.messages import describe
from bot.monitor import HealthMonitor
from bot.notify import SlackNotifier
from bot.salesforce import SalesforceClient
from bot.slack_app import BotIdentity, Services, SlackHttp, create_app
from bot.slack_errors import slack_error
from bot.slack_install import (
    BOT_SCOPES,
    ROTATE_MINUTES_BEFORE,
    DatabaseStateStore,
    EncryptedInstallationStore,
    Installed,
    OneRotationAtATime,
    OneWorkspace,
    SlackClients,
)
from bot.web import create_web_app
from storage.db import Database, create_db_engine, upgrade
from storage.models import utcnow

log = logging.getLogger("vcc")


@dataclass
class Runtime:
    settings: Settings
    db: Database
    cipher: TokenCipher
    salesforce: SalesforceClient
    core: Core
    monitor: HealthMonitor
    bolt: AsyncApp
    web: Starlette
    installations: EncryptedInstallationStore | None = None
    notifier: SlackNotifier | None = None
    http: SlackHttp | None = None
    home: HomeTab | None = None
    doctor: Doctor | None = None

    @property
    def links(self) -> LinkService:
        return self.core.links

    @property
    def login(self) -> LoginFlow:
        return self.core.login

    @property
    def health(self) -> LinkHealth:
        return self.core.health

    @property
    def background(self) -> Background:
        return self.core.background

    async def aclose(self) -> None:
        """Finish what is under way (bounded), then close the shared Salesforce client."""
        await self.core.aclose(within=self.settings.shutdown_timeout)
        if self.notifier is not None:
            await self.notifier.aclose(within=self.settings.shutdown_timeout)
        if self.home is not None:
            await self.home.aclose(within=self.settings.shutdown_timeout)
        if self.http is not None:
            await self.http.aclose()
        await self.salesforce.aclose()


def build(
    settings: Settings,
    *,
    socket_mode: bool = False,
    salesforce_transport: httpx2.AsyncBaseTransport | None = None,
) -> Runtime:
    """Compose the bot from settings: database (migrated), clients, core, Slack and web apps.

    `salesforce_transport` lets tests route Salesforce hosts (custom domains) to loopback.
    """
    engine = create_db_engine(settings.database_url, timeout=settings.database_timeout)
    upgrade(engine)
    db = Database(engine)
    # slack_sdk's defaults retry connection errors; add waiting out 429s to them.
    retry_handlers = [*async_default_handlers(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]
    token = settings.slack_bot_token
    slack_client = AsyncWebClient(
        token=token.get_secret_value() if token is not None else None,
        base_url=settings.slack_api_url,
        retry_handlers=retry_handlers,
    )
    cipher = TokenCipher(settings.encryption_keys)
    http = SlackHttp()
    installations, oauth_settings = None, None
    clients: SlackClients = OneWorkspace(slack_client)
    if settings.many_workspaces:
        installations, oauth_settings = _slack_install(settings, db, cipher)
        assert settings.slack_client_id and settings.slack_client_secret
        clients = Installed(
            store=installations,
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret.get_secret_value(),
            base_url=settings.slack_api_url,
            retry_handlers=retry_handlers,
            session=lambda: http.session,
        )
    salesforce = SalesforceClient(
        client_id=settings.salesforce_client_id,
        client_secret=settings.salesforce_client_secret.get_secret_value(),
        redirect_uri=settings.salesforce_callback_url,
        transport=salesforce_transport,
    )
    notifier = SlackNotifier(clients)
    doctor = _doctor(settings, db, cipher, salesforce, clients)
    core = compose(
        db=db,
        cipher=cipher,
        salesforce=salesforce,
        notifier=notifier,
        login_hosts={
            Environment.PRODUCTION: settings.salesforce_production_url,
            Environment.SANDBOX: settings.salesforce_sandbox_url,
        },
        public_url=settings.public_url,
        check_interval=timedelta(seconds=settings.vcc_health_interval),
        reuse_for=timedelta(seconds=settings.vcc_check_reuse),
        clock=utcnow,
    )
    identity = None if settings.many_workspaces else BotIdentity(slack_client)
    notifier.record_undelivered = core.links.record_undelivered
    admins = AdminPolicy(settings.vcc_admin_users)
    home = HomeTab(clients, core.links, admins)
    notifier.on_change = home.changed
    bolt = create_app(
        client=slack_client,
        identity=identity,
        oauth_settings=oauth_settings,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        services=Services(
            links=core.links,
            login=core.login,
            health=core.health,
            notifier=notifier,
            admins=admins,
            installations=installations,
            http=http,
            home=home,
            doctor=doctor,
        ),
    )
    monitor = HealthMonitor(
        store=core.store,
        health=core.health,
        pending=core.pending,
        interval_seconds=settings.vcc_health_interval,
    )
    runtime = Runtime(
        settings=settings,
        db=db,
        cipher=cipher,
        salesforce=salesforce,
        core=core,
        monitor=monitor,
        bolt=bolt,
        web=Starlette(),
        installations=installations,
        notifier=notifier,
        http=http,
        home=home,
        doctor=doctor,
    )
    runtime.web = create_web_app(
        login=core.login,
        public_url=settings.public_url,
        ready=lambda: ready(db, identity),
        startup=identity.keep_loading if identity is not None else None,
        bolt=None if socket_mode else bolt,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        cookie_secure=settings.cookie_secure,
        background=monitor.run_forever,
        shutdown=runtime.aclose,
        opening=lambda: http.open(slack_client),
    )
    return runtime


def _slack_install(
    settings: Settings, db: Database, cipher: TokenCipher
) -> tuple[EncryptedInstallationStore, AsyncOAuthSettings]:
    """Many workspaces: bolt's OAuth install flow over stores in the bot's database."""
    assert settings.slack_client_id and settings.slack_client_secret
    installations = EncryptedInstallationStore(
        client_id=settings.slack_client_id,
        engine=db.engine,
        write_engine=db.write_engine,
        cipher=cipher,
    )
    oauth_settings = AsyncOAuthSettings(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get_secret_value(),
        scopes=list(BOT_SCOPES),
        user_scopes=[],
        installation_store=installations,
        installation_store_bot_only=True,
        state_store=DatabaseStateStore(engine=db.write_engine),
        redirect_uri=settings.slack_redirect_url,
        install_path="/slack/install",
        # The install link goes straight to Slack's approval page (no page of ours between).
        install_page_rendering_enabled=False,
        redirect_uri_path="/slack/oauth_redirect",
        authorization_url=settings.slack_authorize_url,
        token_rotation_expiration_minutes=ROTATE_MINUTES_BEFORE,
    )
    # bolt's authorize rotates expiring tokens with a client of its own, on slack.com:
    # give it one on SLACK_API_URL, like every other call the bot makes.
    oauth_settings.authorize = OneRotationAtATime(
        logger=logging.getLogger("vcc.bolt"),
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret.get_secret_value(),
        token_rotation_expiration_minutes=ROTATE_MINUTES_BEFORE,
        installation_store=installations,
        bot_only=True,
        client=AsyncWebClient(base_url=settings.slack_api_url),
    )
    return installations, oauth_settings


async def ready(db: Database, identity: BotIdentity | None) -> bool:
    """Serving: the database answers and (one workspace) the bot knows who it is in Slack."""
    return (identity is None or identity.ready) and await db.ready()


def configure_logging(level: str) -> None:
    # Messages can carry what a request sent (a path, a Slack field): escaping control
    # characters keeps each record on one line, so none can forge another record.
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
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
        # SIGTERM: stop accepting, let requests in flight (callbacks) finish within bounds.
        timeout_graceful_shutdown=runtime.settings.shutdown_timeout,
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


def quiet_signals() -> None:
    """uvicorn handles SIGTERM and SIGINT while it serves, then raises the signal again
    under the handlers it found: with Python's defaults the process would die of it (exit
    -15) after a clean shutdown. Handlers that do nothing let the command return 0."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)


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
    # What build() made lives as long as the process: keep it out of the collector's
    # full passes, which otherwise stall the event loop for 100 ms and more.
    gc.freeze()
    quiet_signals()
    try:
        if socket_mode:
            asyncio.run(_serve_socket_mode(runtime))
        else:
            uvicorn.Server(uvicorn_config(runtime)).run()
    finally:
        runtime.db.dispose()
    return 0


def _database(settings: DatabaseSettings) -> Database:
    engine = create_db_engine(settings.database_url, timeout=settings.database_timeout)
    upgrade(engine)
    return Database(engine)


def db_upgrade() -> int:
    settings = load(DatabaseSettings)
    configure_logging(settings.log_level)
    _database(settings).dispose()
    print("database is up to date")
    return 0


def import_legacy_command(path: Path) -> int:
    from bot.maintenance import LegacyFileError, legacy_lines, parse_legacy_csv

    settings = load(DatabaseSettings)
    configure_logging(settings.log_level)

    def refused(exc: LegacyImportError) -> int:
        print(f"Nothing was imported from {path}:", file=sys.stderr)
        for problem in exc.report():
            print(f"  {problem}", file=sys.stderr)
        return 1

    # The whole file is checked before the database is opened: a bad file touches nothing.
    try:
        with path.open("rb") as file:
            rows = parse_legacy_csv(legacy_lines(file))
    except OSError as exc:
        print(f"cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    except LegacyFileError as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1
    except LegacyImportError as exc:
        return refused(exc)
    db = _database(settings)
    try:
        count = import_legacy(db, rows)
    except LegacyImportError as exc:
        return refused(exc)
    finally:
        db.dispose()
    print(f"Imported {count} legacy account(s) from {path}; /vcc status shows them as Legacy.")
    return 0


def audit_command(account: str | None, fmt: str) -> int:
    settings = load(DatabaseSettings)
    configure_logging(settings.log_level)
    db = _database(settings)
    try:
        export_audit(db, sys.stdout, account_id=account, fmt=fmt)
    finally:
        db.dispose()
    return 0


def rotate_key_command() -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    runtime = build(settings)

    async def rotate() -> RotationReport:
        try:
            return await rotate_keys(runtime.db, runtime.cipher, runtime.health)
        finally:
            await runtime.aclose()

    try:
        report = asyncio.run(rotate())
    finally:
        runtime.db.dispose()
    print(f"Re-encrypted {report.rotated} token(s) with the first key of VCC_ENCRYPTION_KEY.")
    if runtime.installations is not None:
        rotated, lost = runtime.installations.rotate_keys(runtime.cipher)
        print(f"Re-encrypted the Slack tokens of {rotated} installation record(s).")
        if lost:
            print(
                "No key decrypts the Slack token of "
                + ", ".join(lost)
                + ": install the app there again (its /slack/install page).",
            )
    if report.undecryptable:
        print(
            "No key decrypts the token of "
            + ", ".join(report.undecryptable)
            + ": marked broken; relink them.",
        )
    print("Keys after the first can be removed once every replica runs with the new order.")
    return 0


def _account_line(view: AccountView) -> str:
    health = f"{view.health}" + (f" ({view.health_reason})" if view.health_reason else "")
    return "  ".join(
        [
            view.team_id,
            view.account_id,
            view.status.value,
            view.environment.value if view.environment else "-",
            view.org_id or "-",
            view.sf_username or "-",
            health if view.status != "unlinked" else "-",
            view.notify_channel or "-",
        ]
    )


def accounts_command(team: str | None) -> int:
    """List the accounts of a workspace (all, without --team), and which workspaces have
    the app installed (many workspaces only)."""
    settings = load_settings()
    configure_logging(settings.log_level)
    runtime = build(settings)

    async def listing() -> list[AccountView]:
        try:
            return await runtime.links.accounts(team)
        finally:
            await runtime.aclose()

    try:
        views = asyncio.run(listing())
        installed = runtime.installations.installed_teams() if runtime.installations else None
    finally:
        runtime.db.dispose()
    print("team  account  status  environment  org  API user  health  channel")
    for view in views:
        print(_account_line(view))
    if not views:
        print(f"(no VCC accounts{' in ' + team if team else ''})")
    if installed is not None:
        teams = [i["team_id"] or f"{i['enterprise_id']} (org-wide)" for i in installed]
        print("installed in: " + (", ".join(teams) if teams else "no workspace"))
    return 0


def unlink_command(team: str, account: str) -> int:
    """An operator's unlink: revoked at Salesforce, recorded, announced like an admin's."""
    settings = load_settings()
    configure_logging(settings.log_level)
    runtime = build(settings)

    async def unlink() -> AccountView:
        try:
            return await runtime.links.unlink(team, parse_account_id(account), "operator")
        finally:
            await runtime.aclose()

    try:
        view = asyncio.run(unlink())
    except LinkError as exc:
        title, detail = describe(exc)
        print(f"{title}: {detail}", file=sys.stderr)
        return 1
    finally:
        runtime.db.dispose()
    print(f"Unlinked VCC account {view.account_id} of team {view.team_id}.")
    return 0


def _doctor(
    settings: Settings,
    db: Database,
    cipher: TokenCipher,
    salesforce: SalesforceClient,
    clients: SlackClients,
) -> Doctor:
    return Doctor(
        public_url=settings.public_url,
        login_hosts={
            Environment.PRODUCTION: settings.salesforce_production_url,
            Environment.SANDBOX: settings.salesforce_sandbox_url,
        },
        salesforce=salesforce,
        db=db,
        cipher=cipher,
        channels=_channel_lookup(clients),
    )


def _channel_lookup(clients: SlackClients) -> ChannelLookup:
    """Slack's side of the doctor's channel check: conversations.info reads what the bot
    may know of a channel (channels:read, groups:read) and posts nothing there."""

    async def info(team_id: str, enterprise_id: str | None, channel_id: str) -> ChannelInfo:
        client = await clients.client_for(team_id, enterprise_id)
        if client is None:
            return ChannelInfo(error=NOT_INSTALLED)
        try:
            response = await client.conversations_info(channel=channel_id)
        except SlackApiError as exc:
            return ChannelInfo(error=slack_error(exc))
        except aiohttp.ClientError as exc:
            return ChannelInfo(error=type(exc).__name__)
        channel = response.get("channel") or {}
        return ChannelInfo(
            is_member=bool(channel.get("is_member")),
            is_private=bool(channel.get("is_private")),
            is_archived=bool(channel.get("is_archived")),
        )

    return info


def doctor_command() -> int:
    """Every check, over every workspace's accounts: exit 0 when all passed, 1 otherwise."""
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        runtime: Runtime | None = build(settings)
    except SQLAlchemyError as exc:
        # The database did not answer while migrating: that is one of the findings, and the
        # other checks still run (those that need the database say they could not).
        log.warning("the database did not answer at start (%s)", type(exc).__name__)
        runtime = None
    if runtime is not None and runtime.doctor is not None:
        doctor, db, close = runtime.doctor, runtime.db, runtime.aclose
    else:
        db = Database(create_db_engine(settings.database_url, timeout=settings.database_timeout))
        salesforce = SalesforceClient(
            client_id=settings.salesforce_client_id,
            client_secret=settings.salesforce_client_secret.get_secret_value(),
            redirect_uri=settings.salesforce_callback_url,
        )
        slack = OneWorkspace(AsyncWebClient(base_url=settings.slack_api_url))
        doctor = _doctor(settings, db, TokenCipher(settings.encryption_keys), salesforce, slack)
        close = salesforce.aclose

    async def check() -> DoctorReport:
        try:
            return await doctor.run(None)
        finally:
            await close()

    try:
        report = asyncio.run(check())
    finally:
        db.dispose()
    print(render_text(report))
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vcc-bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the bot's HTTP server and health monitor")
    serve_cmd.add_argument(
        "--socket-mode",
        action="store_true",
        help="receive Slack's requests over Socket Mode (SLACK_APP_TOKEN); no public URL needed",
    )
    sub.add_parser("keygen", help="print a new VCC_ENCRYPTION_KEY")
    db_cmd = sub.add_parser("db", help="database maintenance")
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply database migrations")
    legacy_cmd = sub.add_parser(
        "import-legacy", help="record accounts linked by the old method as Legacy"
    )
    legacy_cmd.add_argument(
        "file",
        type=Path,
        help="CSV: team id, account id, environment, API username, optional org id",
    )
    audit_cmd = sub.add_parser("audit", help="export the audit trail")
    audit_cmd.add_argument("--account", help="only this VCC account id")
    audit_cmd.add_argument("--format", choices=["csv", "json"], default="csv")
    sub.add_parser("rotate-key", help="re-encrypt every stored token with the first key")
    accounts_cmd = sub.add_parser("accounts", help="list VCC accounts and their links")
    accounts_cmd.add_argument("--team", help="only this Slack workspace (team id)")
    unlink_cmd = sub.add_parser(
        "unlink", help="unlink a workspace's VCC account (revokes its Salesforce token)"
    )
    unlink_cmd.add_argument("--team", required=True, help="the Slack workspace (team id)")
    unlink_cmd.add_argument("account", help="the VCC account id")
    sub.add_parser("doctor", help="check the configuration and say what to fix")
    demo_cmd = sub.add_parser(
        "demo", help="try the bot here, against stand-ins of Slack and Salesforce (no settings)"
    )
    demo_cmd.add_argument("--port", type=int, default=0, help="the bot's port (default: free)")
    demo_cmd.add_argument(
        "--side-port", type=int, default=0, help="the Slack side page's port (default: free)"
    )
    demo_cmd.add_argument("--no-browser", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            print(generate_key())
            return 0
        if args.command == "db":
            return db_upgrade()
        if args.command == "import-legacy":
            return import_legacy_command(args.file)
        if args.command == "audit":
            return audit_command(args.account, args.format)
        if args.command == "rotate-key":
            return rotate_key_command()
        if args.command == "accounts":
            return accounts_command(args.team)
        if args.command == "unlink":
            return unlink_command(args.team, args.account)
        if args.command == "doctor":
            return doctor_command()
        if args.command == "demo":
            from bot import demo  # the stand-ins load only for the demo

            return demo.run(
                port=args.port, side_port=args.side_port, open_browser=not args.no_browser
            )
        return serve(args.socket_mode)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        if args.command == "serve":
            print(
                "To try the bot first, without Slack or Salesforce: vcc-bot demo",
                file=sys.stderr,
            )
        return 2


if __name__ == "__main__":
    sys.exit(main())
