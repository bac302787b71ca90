"""What the bot tells people: DMs to admins and notices in the notification channel."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.domain import AccountView, LinkError, LinkResult, LoginContext, LoginLink

log = logging.getLogger(__name__)


Undelivered = Callable[[AccountView, str, str], Awaitable[None]]


class SlackNotifier:
    """Implements links.Notifier over Slack's Web API.

    A failed notice never undoes a link. It is logged; the admin who linked the account
    is sent it as a DM, with how to fix the channel; and `record_undelivered` (wired by
    the composition root to the audit trail) keeps a trace of it.
    """

    def __init__(self, client: AsyncWebClient, record_undelivered: Undelivered | None = None):
        self._client = client
        self.record_undelivered = record_undelivered

    async def dm(self, user_id: str, message: blocks.Message) -> None:
        opened = await self._client.conversations_open(users=user_id)
        await self._client.chat_postMessage(channel=opened["channel"]["id"], **message.kwargs())

    async def _dm_quietly(self, user_id: str, message: blocks.Message) -> None:
        try:
            await self.dm(user_id, message)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not DM %s: %s", user_id, _reason(exc))

    async def _notice(
        self,
        account: AccountView,
        message: blocks.Message,
        kind: str,
        admin: str | None,
        *,
        forward: bool = True,
    ) -> None:
        """Post in the account's notification channel; if Slack refuses, tell the admin
        how to fix the channel and (`forward`) send them the notice itself."""
        channel = account.notify_channel
        try:
            if not channel:
                raise LookupError("no_channel")
            await self._client.chat_postMessage(channel=channel, **message.kwargs())
            return
        except (SlackApiError, aiohttp.ClientError, TimeoutError, LookupError) as exc:
            error = _reason(exc)
        log.warning("could not post a %s notice in %s: %s", kind, channel, error)
        if admin:
            await self._dm_quietly(admin, blocks.channel_unreachable(channel or "", error))
            if forward:
                await self._dm_quietly(admin, message)
        if self.record_undelivered is not None:
            await self.record_undelivered(account, kind, error)

    async def login_link(self, link: LoginLink) -> None:
        """Sent by the listener; not quiet: without it the admin cannot go on."""
        await self.dm(link.context.user_id, blocks.login_link(link))

    async def linked(self, ctx: LoginContext, result: LinkResult) -> None:
        await self._dm_quietly(ctx.user_id, blocks.linked_dm(result))
        # The admin has the details in the DM above: if the notice fails, only say so.
        notice = blocks.linked_notice(result)
        await self._notice(result.account, notice, "linked", ctx.user_id, forward=False)

    async def link_failed(self, ctx: LoginContext, error: LinkError) -> None:
        await self._dm_quietly(ctx.user_id, blocks.failure(error, ctx.account_id))

    async def unlinked(self, account: AccountView, by_user: str) -> None:
        notice = blocks.unlinked_notice(account, by_user)
        await self._notice(account, notice, "unlinked", account.linked_by or by_user)

    async def broken(self, account: AccountView) -> None:
        await self._notice(account, blocks.broken_notice(account), "broken", account.linked_by)

    async def recovered(self, account: AccountView) -> None:
        notice = blocks.recovered_notice(account)
        await self._notice(account, notice, "recovered", account.linked_by)

    async def revoked_by_approval(
        self, ctx: LoginContext, accounts: list[AccountView], *, refused: bool
    ) -> None:
        await self._dm_quietly(
            ctx.user_id, blocks.approval_revoked_dm(ctx.account_id, accounts, refused=refused)
        )

    async def connected_app_refused(
        self, user_id: str, accounts: list[AccountView], problem: str
    ) -> None:
        await self._dm_quietly(user_id, blocks.connected_app_refused_dm(accounts, problem))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "unknown_error"))
    if isinstance(exc, LookupError):
        return str(exc.args[0])
    return type(exc).__name__  # the network failed; Slack said nothing
