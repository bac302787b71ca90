"""What the bot tells people: DMs to admins and notices in the notification channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import blocks
from bot.domain import (
    AccountView,
    LinkError,
    LinkResult,
    LoginClosed,
    LoginContext,
    LoginEnd,
    LoginLink,
    SentMessage,
)
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
# Login ends that need no new DM when the login DM cannot be updated: nothing happened.
QUIET = {LoginEnd.EXPIRED, LoginEnd.USED}
# A click's response_url takes at most 5 posts within 30 minutes of the click (api.slack.
# com/interactivity/handling#message_responses); the login started with the click.
REPLY_LIFETIME = timedelta(minutes=30)
# slack_sdk's webhook client logs the URL it posts to at DEBUG. A response_url lets whoever
# holds it post there as the bot: its logger stays at WARNING whatever the bot's level.
_RESPONSE_URL_LOG = logging.getLogger("bot.notify.response_url")
_RESPONSE_URL_LOG.setLevel(logging.WARNING)


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
        # Told the team of every link change (wired to the Home tab by the composition root).
        self.on_change: Callable[[str], None] | None = None

    def _changed(self, account: AccountView) -> None:
        if self.on_change is not None:
            self.on_change(account.team_id)

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

    async def login_link(
        self, link: LoginLink, *, replacing: SentMessage | None = None
    ) -> SentMessage:
        """Sent by the listener; not quiet: without it the admin cannot go on. Returns where
        the DM is, so that it can show how the login ends; `replacing` puts the link in
        place of an ended login's DM ("Send me a new link") instead of a new message."""
        client = await self._client(link.context)
        message = blocks.login_link(link)
        if replacing is not None:
            await client.chat_update(channel=replacing.channel, ts=replacing.ts, **message.kwargs())
            return replacing
        opened = await client.conversations_open(users=link.context.user_id)
        posted = await client.chat_postMessage(channel=opened["channel"]["id"], **message.kwargs())
        return SentMessage(str(posted["channel"]), str(posted["ts"]))

    async def login_closed(self, closed: LoginClosed) -> None:
        """The login DM shows how its login ended, without its login button, and so does
        the click's "Check your DMs" reply. A DM Slack will not update is sent anew when
        something happened; a linked account's channel hears of it as with `linked`."""
        ctx = closed.context
        try:
            client: AsyncWebClient | None = await self._client(ctx)
        except (SlackApiError, aiohttp.ClientError, TimeoutError, NotInstalled) as exc:
            log.warning("could not update the login DM of %s: %s", ctx.user_id, _reason(exc))
            client = None
        dm = blocks.login_closed_dm(closed)
        if not await self._update_quietly(client, closed.dm, dm) and closed.end not in QUIET:
            await self._dm_quietly(ctx, ctx.user_id, dm)
        await _replace_quietly(closed, client.session if client is not None else None)
        if closed.result is not None:
            self._changed(closed.result.account)
            notice = blocks.linked_notice(closed.result)
            await self._notice(closed.result.account, notice, "linked", ctx.user_id, forward=False)

    async def _update_quietly(
        self, client: AsyncWebClient | None, where: SentMessage | None, message: blocks.Message
    ) -> bool:
        if client is None or where is None:
            return False
        try:
            await client.chat_update(channel=where.channel, ts=where.ts, **message.kwargs())
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not update the login DM in %s: %s", where.channel, _reason(exc))
            return False
        return True

    async def linked(self, ctx: LoginContext, result: LinkResult) -> None:
        self._changed(result.account)
        await self._dm_quietly(ctx, ctx.user_id, blocks.linked_dm(result))
        # The admin has the details in the DM above: if the notice fails, only say so.
        notice = blocks.linked_notice(result)
        await self._notice(result.account, notice, "linked", ctx.user_id, forward=False)

    async def link_failed(self, ctx: LoginContext, error: LinkError) -> None:
        await self._dm_quietly(ctx, ctx.user_id, blocks.failure(error, ctx.account_id))

    async def unlinked(self, account: AccountView, by_user: str) -> None:
        self._changed(account)
        notice = blocks.unlinked_notice(account, by_user)
        await self._notice(account, notice, "unlinked", account.linked_by or by_user)

    async def broken(self, account: AccountView) -> None:
        self._changed(account)
        self._queue("broken", account)

    async def recovered(self, account: AccountView) -> None:
        self._changed(account)
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
                        if kind == "broken":
                            await self._broken_dms(views)
                        await asyncio.sleep(self._pace)
        except Exception:  # a notice must never take its sender down silently
            log.exception("could not send %s's waiting notices", key)
        finally:
            self._senders.pop(key, None)

    async def _broken_dms(self, views: list[AccountView]) -> None:
        """Each admin who linked a broken account hears it in a DM with a Relink button,
        once per break (the core reports a break once: on the change to broken)."""
        by_admin: dict[str, list[AccountView]] = {}
        for view in views:
            if view.linked_by:
                by_admin.setdefault(view.linked_by, []).append(view)
        for admin, theirs in by_admin.items():
            await self._dm_quietly(theirs[0], admin, blocks.broken_dm(theirs))

    async def _group_notice(self, kind: str, views: list[AccountView]) -> None:
        message = GROUPED[kind](views)
        first = views[0]
        if len(views) == 1:
            forward = kind != "broken"  # the admin has the broken-link DM instead
            await self._notice(first, message, kind, first.linked_by, forward=forward)
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
                if kind != "broken":  # the admin has the broken-link DM instead
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


async def _replace_quietly(closed: LoginClosed, session: aiohttp.ClientSession | None) -> None:
    """Replace the clicked message ("Check your DMs") through the click's response_url,
    if Slack still takes it; never fails, and never logs the URL."""
    if closed.reply_to is None or datetime.now(UTC) - closed.started_at >= REPLY_LIFETIME:
        return  # none, or expired: Slack would refuse it
    message = blocks.login_closed_reply(closed)
    client = AsyncWebhookClient(url=closed.reply_to, session=session, logger=_RESPONSE_URL_LOG)
    try:
        answer = await client.send(replace_original=True, **message.kwargs())
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("could not replace a login's reply: %s", type(exc).__name__)
        return
    if answer.status_code != 200:  # used up, or expired sooner than we counted
        log.info("Slack did not replace a login's reply (HTTP %s)", answer.status_code)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return slack_error(exc)
    if isinstance(exc, LookupError):
        return str(exc.args[0])
    return type(exc).__name__  # the network failed; Slack said nothing
