"""What every handler shares: the admin gate and turning failures into replies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot import blocks
from bot.admins import AdminCheckFailed, BoundAdminPolicy
from bot.domain import LinkError

log = logging.getLogger(__name__)


class Refused(Exception):
    """The user may not do this; they have been told."""


async def reply(respond: AsyncRespond, message: blocks.Message, *, replace: bool = False) -> None:
    if replace:
        await respond(replace_original=True, **message.kwargs())
    else:
        await respond(response_type="ephemeral", replace_original=False, **message.kwargs())


async def require_admin(
    admins: BoundAdminPolicy, respond: AsyncRespond, team_id: str, user_id: str, action: str
) -> None:
    try:
        allowed = await admins.is_admin(team_id, user_id)
    except AdminCheckFailed as exc:
        text = (
            f":warning: I could not confirm that you are a workspace admin (Slack said "
            f"{exc}). Nothing changed; try again."
        )
        await reply(respond, blocks.Message(text=text, blocks=[]))
        raise Refused() from None
    if not allowed:
        await reply(respond, blocks.not_allowed(action))
        raise Refused()


@asynccontextmanager
async def answering(respond: AsyncRespond, account_id: str | None = None) -> AsyncIterator[None]:
    """Map domain and Slack failures to a clear ephemeral reply; nothing is swallowed silently."""
    try:
        yield
    except Refused:
        pass
    except LinkError as exc:
        await reply(respond, blocks.failure(exc, account_id))
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        log.warning("Slack API error while handling a request: %s", error)
        text = f":warning: Slack refused a step ({error}). Nothing changed; try again."
        await reply(respond, blocks.Message(text=text, blocks=[]))
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Slack did not take an answer (a response_url timing out under load): answering
        # again through the same way would only fail twice.
        log.warning("could not answer on Slack's response_url: %s", type(exc).__name__)
