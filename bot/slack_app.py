"""The bolt app: listeners registered, services put into bolt's context."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import listeners
from bot.admins import AdminPolicy
from bot.doctor import Doctor
from bot.home import HomeTab
from bot.links import LinkHealth, LinkService, LoginFlow
from bot.listeners.common import Work
from bot.notify import SlackNotifier
from bot.slack_install import EncryptedInstallationStore

log = logging.getLogger(__name__)


class SlackHttp:
    """One aiohttp session for every call to Slack: Web API methods (each workspace's
    client) and response_url replies. Without it slack_sdk and bolt open a session, and
    a TCP connection, per call. Opened inside the app's event loop, before requests."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def open(self, *clients: AsyncWebClient) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for client in clients:
            client.session = self.session  # bolt's per-request clients take it from here

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


class SharedRespond(AsyncRespond):
    """bolt's `respond`, through the shared session."""

    def __init__(self, *, response_url: str, session: aiohttp.ClientSession) -> None:
        super().__init__(response_url=response_url)
        self._session = session

    async def __call__(  # type: ignore[override]
        self,
        text: str = "",
        blocks: list[dict[str, Any]] | None = None,
        response_type: str | None = None,
        replace_original: bool | None = None,
        delete_original: bool | None = None,
    ) -> WebhookResponse:
        assert self.response_url is not None
        client = AsyncWebhookClient(url=self.response_url, session=self._session)
        return await client.send(
            text=text,
            blocks=blocks,
            response_type=response_type,
            replace_original=replace_original,
            delete_original=delete_original,
        )


@dataclass(frozen=True)
class Services:
    """What listeners may declare as parameters (bolt injects context keys by name)."""

    links: LinkService
    login: LoginFlow
    health: LinkHealth
    notifier: SlackNotifier
    admins: AdminPolicy
    # Many workspaces only: where each workspace's installation is kept.
    installations: EncryptedInstallationStore | None = None
    http: SlackHttp | None = None
    work: Work = field(default_factory=Work)
    doctor: Doctor | None = None  # /vcc doctor's checks
    home: HomeTab | None = None


class BotIdentity:
    """Who the bot is (auth.test), learnt at start-up rather than on the first request.

    bolt's single-workspace authorization calls auth.test when the first request arrives,
    and that request waits for it (seconds when Slack is slow). Here it is asked while the
    app starts; /healthz reports ready only once it is known, and every request is
    authorized from it.
    """

    RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._result: AuthorizeResult | None = None

    @property
    def ready(self) -> bool:
        return self._result is not None

    async def load(self) -> AuthorizeResult:
        response = await self._client.auth_test()
        self._result = AuthorizeResult.from_auth_test_response(
            auth_test_response=response, bot_token=self._client.token, user_token=None
        )
        return self._result

    async def keep_loading(self) -> None:
        """Until Slack answers (a start while Slack is down must not end the process)."""
        attempt = 0
        while self._result is None:
            try:
                await self.load()
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                wait = self.RETRY_SECONDS[min(attempt, len(self.RETRY_SECONDS) - 1)]
                log.warning("auth.test failed (%s); trying again in %.0f s", exc, wait)
                attempt += 1
                await asyncio.sleep(wait)

    async def authorize(self) -> AuthorizeResult:
        return self._result or await self.load()


class _SkipTokenFromEnvironmentWarning(logging.Filter):
    """bolt warns that the token it reads itself is ignored: it should be (see BotIdentity)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        # The token is given through `authorize` (BotIdentity) on purpose.
        return message != warning_client_prioritized_and_token_skipped() and not (
            message.startswith("As `installation_store` or `authorize` has been used")
        )


def create_app(
    *,
    client: AsyncWebClient,
    signing_secret: str,
    services: Services,
    identity: BotIdentity | None = None,
    oauth_settings: AsyncOAuthSettings | None = None,
) -> AsyncApp:
    """One workspace (`identity`, from SLACK_BOT_TOKEN) or many (`oauth_settings`: Slack's
    OAuth install, each request authorized from its workspace's stored installation)."""
    bolt_logger = logging.getLogger("vcc.bolt")
    if not bolt_logger.filters:
        bolt_logger.addFilter(_SkipTokenFromEnvironmentWarning())

    authorize = None
    if identity is not None:

        async def authorize() -> AuthorizeResult:  # type: ignore[misc]
            # A plain function: bolt passes arguments by the names in its signature.
            return await identity.authorize()

    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        authorize=authorize,
        oauth_settings=oauth_settings,
        # Ack first, work after: listeners keep running once Slack has its answer.
        process_before_response=False,
        # bot.web checks the signature on the raw body before anything else, then hands
        # bolt a validated body (bot.slack_requests); Socket Mode carries no signature.
        request_verification_enabled=False,
        logger=bolt_logger,
    )

    async def inject_services(context: AsyncBoltContext, next: Callable[[], Awaitable[Any]]) -> Any:
        # Context keys become listener arguments: handlers simply declare `links`.
        for name, service in vars(services).items():
            context[name] = service
        http = services.http.session if services.http is not None else None
        if http is not None and context.response_url:
            context["respond"] = SharedRespond(response_url=context.response_url, session=http)
        # Admin checks ask with this request's own workspace client.
        context["admins"] = services.admins.bound(context.client)
        return await next()

    app.middleware(inject_services)

    async def on_error(error: Exception, body: dict[str, Any], respond: Any) -> None:
        log.exception("unhandled error in a Slack listener", exc_info=error)
        if body.get("response_url"):
            await respond(
                response_type="ephemeral",
                replace_original=False,
                text=":warning: Something went wrong on our side. Nothing changed; try again.",
            )

    app.error(on_error)
    listeners.register(app)
    return app
