"""What the bot tells people: DMs to admins and notices in the notification channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.domain import AccountView, LinkError, LinkResult, LoginContext, LoginLink
from bot.slack_errors import slack_error
from bot.slack_install import SlackClients

log = logging.getLogger(__name__)


Undelivered = Callable[[AccountView, str, str], Awaitable[None]]
NOT_INSTALLED = "app_not_installed"


class NotInstalled(LookupError):
    """The app has no token for this workspace (uninstalled): its notices wait."""


Where = LoginContext | AccountView

# Slack takes about one message per second per channel (chat.postMessage's special rate
# limit); a mass revocation must not become hundreds of messages, nor a burst of 429s.
PACE_SECONDS = 1.0
# How long the first change of a burst waits for others to join its message (a break
# makes its org's other links due at once: the monitor's next pass finds them together).
GATHER_SECONDS = 3.0
GROUPED = {"broken": blocks.broken_group_notice, "recovered": blocks.recovered_group_notice}


class SlackNotifier:
    """Implements links.Notifier over Slack's Web API.

    A failed notice never undoes a link. It is logged; the admin who linked the account
    is sent it as a DM, with how to fix the channel; and `record_undelivered` (wired by
    the composition root to the audit trail) keeps a trace of it.

    Each message goes out with its own workspace's token (`clients`). A workspace that
    uninstalled the app has none: its notices are paused (recorded as undelivered, not
    sent) until the app is installed there again.
    """

    def __init__(
        self,
        clients: SlackClients,
        record_undelivered: Undelivered | None = None,
        *,
        pace: float = PACE_SECONDS,
        gather: float = GATHER_SECONDS,
    ) -> None:
        self._clients = clients
        self.record_undelivered = record_undelivered
        self._pace = pace
        self._gather = gather
        # Changes waiting for their channel, by (team, channel): one sender each.
        self._waiting: dict[tuple[str, str], list[tuple[str, AccountView]]] = {}
        self._senders: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def _client(self, where: Where) -> AsyncWebClient:
        client = await self._clients.client_for(where.team_id, where.enterprise_id)
        if client is None:
            raise NotInstalled(NOT_INSTALLED)
        return client

    async def dm(self, where: Where, user_id: str, message: blocks.Message) -> None:
        client = await self._client(where)
        opened = await client.conversations_open(users=user_id)
        await client.chat_postMessage(channel=opened["channel"]["id"], **message.kwargs())

    async def _dm_quietly(self, where: Where, user_id: str, message: blocks.Message) -> None:
        try:
            await self.dm(where, user_id, message)
        except (SlackApiError, aiohttp.ClientError, TimeoutError, NotInstalled) as exc:
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
            client = await self._client(account)
            if not channel:
                raise LookupError("no_channel")
            await client.chat_postMessage(channel=channel, **message.kwargs())
            return
        except (SlackApiError, aiohttp.ClientError, TimeoutError, LookupError) as exc:
            error = _reason(exc)
        log.warning("could not post a %s notice in %s: %s", kind, channel, error)
        if admin and error != NOT_INSTALLED:
            await self._dm_quietly(account, admin, blocks.channel_unreachable(channel or "", error))
            if forward:
                await self._dm_quietly(account, admin, message)
        if self.record_undelivered is not None:
            await self.record_undelivered(account, kind, error)

    async def login_link(self, link: LoginLink) -> None:
        """Sent by the listener; not quiet: without it the admin cannot go on."""
        await self.dm(link.context, link.context.user_id, blocks.login_link(link))

    async def linked(self, ctx: LoginContext, result: LinkResult) -> None:
        await self._dm_quietly(ctx, ctx.user_id, blocks.linked_dm(result))
        # The admin has the details in the DM above: if the notice fails, only say so.
        notice = blocks.linked_notice(result)
        await self._notice(result.account, notice, "linked", ctx.user_id, forward=False)

    async def link_failed(self, ctx: LoginContext, error: LinkError) -> None:
        await self._dm_quietly(ctx, ctx.user_id, blocks.failure(error, ctx.account_id))

    async def unlinked(self, account: AccountView, by_user: str) -> None:
        notice = blocks.unlinked_notice(account, by_user)
        await self._notice(account, notice, "unlinked", account.linked_by or by_user)

    async def broken(self, account: AccountView) -> None:
        self._queue("broken", account)

    async def recovered(self, account: AccountView) -> None:
        self._queue("recovered", account)

    # -- health changes: grouped per channel, paced ----------------------------------------

    def _queue(self, kind: str, account: AccountView) -> None:
        """Health changes are found by checks that run many at a time: each channel gets
        one message per kind and burst, at most one per PACE_SECONDS."""
        key = (account.team_id, account.notify_channel or "")
        self._waiting.setdefault(key, []).append((kind, account))
        if key not in self._senders:
            self._senders[key] = asyncio.create_task(self._send_waiting(key))

    async def _send_waiting(self, key: tuple[str, str]) -> None:
        try:
            await asyncio.sleep(self._gather)
            while waiting := self._waiting.pop(key, None):
                for kind in ("broken", "recovered"):
                    # One line per account, in its latest state of that kind.
                    views = list({v.account_id: v for k, v in waiting if k == kind}.values())
                    if views:
                        await self._group_notice(kind, views)
                        await asyncio.sleep(self._pace)
        except Exception:  # a notice must never take its sender down silently
            log.exception("could not send %s's waiting notices", key)
        finally:
            self._senders.pop(key, None)

    async def _group_notice(self, kind: str, views: list[AccountView]) -> None:
        message = GROUPED[kind](views)
        first = views[0]
        if len(views) == 1:
            await self._notice(first, message, kind, first.linked_by)
            return
        try:
            client = await self._client(first)
            if not first.notify_channel:
                raise LookupError("no_channel")
            await client.chat_postMessage(channel=first.notify_channel, **message.kwargs())
            return
        except (SlackApiError, aiohttp.ClientError, TimeoutError, LookupError) as exc:
            error = _reason(exc)
        log.warning(
            "could not post a %s notice of %d accounts in %s: %s",
            kind,
            len(views),
            first.notify_channel,
            error,
        )
        by_admin: dict[str, list[AccountView]] = {}
        for view in views:
            if view.linked_by:
                by_admin.setdefault(view.linked_by, []).append(view)
        for admin, theirs in by_admin.items():
            if error != NOT_INSTALLED:
                unreachable = blocks.channel_unreachable(first.notify_channel or "", error)
                await self._dm_quietly(first, admin, unreachable)
                await self._dm_quietly(first, admin, GROUPED[kind](theirs))
        if self.record_undelivered is not None:
            for view in views:
                await self.record_undelivered(view, kind, error)

    async def aclose(self, within: float = 10.0) -> None:
        """Send what is waiting (bounded): a change found before a shutdown is still told."""
        self._gather = 0.0
        senders = list(self._senders.values())
        if senders:
            _, late = await asyncio.wait(senders, timeout=within)
            for task in late:
                task.cancel()

    async def revoked_by_approval(
        self, ctx: LoginContext, accounts: list[AccountView], *, refused: bool
    ) -> None:
        await self._dm_quietly(
            ctx, ctx.user_id, blocks.approval_revoked_dm(ctx.account_id, accounts, refused=refused)
        )

    async def connected_app_refused(
        self, user_id: str, accounts: list[AccountView], problem: str
    ) -> None:
        # One workspace's accounts (LinkHealth groups them so): its token sends the DM.
        await self._dm_quietly(
            accounts[0], user_id, blocks.connected_app_refused_dm(accounts, problem)
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return slack_error(exc)
    if isinstance(exc, LookupError):
        return str(exc.args[0])
    return type(exc).__name__  # the network failed; Slack said nothing
