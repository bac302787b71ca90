"""What the bot tells people: DMs to admins and notices in the notification channel."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.domain import AccountView, LinkError, LinkResult, LoginContext, LoginLink

log = logging.getLogger(__name__)


class SlackNotifier:
    """Implements links.Notifier over Slack's Web API.

    A failed notice never undoes a link: it is logged and, where a person is waiting,
    they are told the notice could not be posted.
    """

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def dm(self, user_id: str, message: blocks.Message) -> None:
        opened = await self._client.conversations_open(users=user_id)
        await self._client.chat_postMessage(channel=opened["channel"]["id"], **message.kwargs())

    async def _dm_quietly(self, user_id: str, message: blocks.Message) -> None:
        try:
            await self.dm(user_id, message)
        except SlackApiError as exc:
            log.warning("could not DM %s: %s", user_id, exc.response.get("error"))

    async def _notice(self, channel_id: str | None, message: blocks.Message) -> str | None:
        """Post in the notification channel; returns Slack's error code if it failed."""
        if not channel_id:
            return "no_channel"
        try:
            await self._client.chat_postMessage(channel=channel_id, **message.kwargs())
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            log.warning("could not post a notice in %s: %s", channel_id, error)
            return error
        return None

    async def login_link(self, link: LoginLink) -> None:
        """Sent by the listener; not quiet: without it the admin cannot go on."""
        await self.dm(link.context.user_id, blocks.login_link(link))

    async def linked(self, ctx: LoginContext, result: LinkResult) -> None:
        await self._dm_quietly(ctx.user_id, blocks.linked_dm(result))
        error = await self._notice(result.account.notify_channel, blocks.linked_notice(result))
        if error:
            await self._dm_quietly(ctx.user_id, blocks.channel_unreachable(ctx.channel_id, error))

    async def link_failed(self, ctx: LoginContext, error: LinkError) -> None:
        await self._dm_quietly(ctx.user_id, blocks.failure(error, ctx.account_id))

    async def unlinked(self, account: AccountView, by_user: str) -> None:
        await self._notice(account.notify_channel, blocks.unlinked_notice(account, by_user))

    async def broken(self, account: AccountView) -> None:
        await self._notice(account.notify_channel, blocks.broken_notice(account))

    async def recovered(self, account: AccountView) -> None:
        await self._notice(account.notify_channel, blocks.recovered_notice(account))

    async def revoked_by_approval(
        self, ctx: LoginContext, accounts: list[AccountView], *, refused: bool
    ) -> None:
        await self._dm_quietly(
            ctx.user_id, blocks.approval_revoked_dm(ctx.account_id, accounts, refused=refused)
        )
