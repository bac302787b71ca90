"""What every handler shares: the admin gate and turning failures into replies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from bot import blocks
from bot.admins import AdminCheckFailed, BoundAdminPolicy
from bot.domain import Busy, LinkError
from bot.slack_errors import slack_error

log = logging.getLogger(__name__)


# Slack requests worked on at once after their ack. More would not finish sooner (they
# share one event loop, the database's threads and the GIL); fewer in flight keeps the
# loop free to acknowledge the next requests within bolt's 10 ms polling.
WORK_SLOTS = 16
# Requests waiting for a slot, at most; beyond, a request is answered "busy" at once
# (a queue without a bound grows with a flood until memory runs out).
WORK_WAITING = 256


class Work:
    """The bound on work after acks: `async with work:` holds a slot, or raises Busy."""

    def __init__(self, slots: int = WORK_SLOTS, waiting: int = WORK_WAITING) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._most_waiting = waiting
        self._waiting = 0

    async def __aenter__(self) -> None:
        if self._slots.locked() and self._waiting >= self._most_waiting:
            raise Busy()
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1

    async def __aexit__(self, *_: object) -> None:
        self._slots.release()


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
        error = slack_error(exc)
        log.warning("Slack API error while handling a request: %s", error)
        text = f":warning: Slack refused a step ({error}). Nothing changed; try again."
        await reply(respond, blocks.Message(text=text, blocks=[]))
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Slack did not take an answer (a response_url timing out under load): answering
        # again through the same way would only fail twice.
        log.warning("could not answer on Slack's response_url: %s", type(exc).__name__)
