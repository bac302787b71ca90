"""The bolt app: listeners registered, services put into bolt's context."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk.web.async_client import AsyncWebClient

from bot import listeners
from bot.admins import AdminPolicy
from bot.links import LinkHealth, LinkService, LoginFlow
from bot.notify import SlackNotifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """What listeners may declare as parameters (bolt injects context keys by name)."""

    links: LinkService
    login: LoginFlow
    health: LinkHealth
    notifier: SlackNotifier
    admins: AdminPolicy


class _SkipTokenFromEnvironmentWarning(logging.Filter):
    """bolt reads SLACK_BOT_TOKEN itself and warns that the client we pass wins; it should."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def create_app(*, client: AsyncWebClient, signing_secret: str, services: Services) -> AsyncApp:
    bolt_logger = logging.getLogger("vcc.bolt")
    if not bolt_logger.filters:
        bolt_logger.addFilter(_SkipTokenFromEnvironmentWarning())
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        # Ack first, work after: listeners keep running once Slack has its answer.
        process_before_response=False,
        logger=bolt_logger,
    )

    async def inject_services(context: AsyncBoltContext, next: Callable[[], Awaitable[Any]]) -> Any:
        # Context keys become listener arguments: handlers simply declare `links`.
        for name, service in vars(services).items():
            context[name] = service
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
