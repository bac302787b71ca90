"""The /vcc slash command."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.admins import BoundAdminPolicy
from bot.doctor import Doctor
from bot.domain import LinkStatus, NotLinked, parse_account_id
from bot.home import HomeTab
from bot.links import LinkHealth, LinkService
from bot.listeners.common import Work, answering, reply, require_admin
from bot.slack_errors import slack_error

# Subcommands about every account of the workspace, or where their notices go.
OVERVIEW = ("accounts", "channel")


async def vcc(
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    client: AsyncWebClient,
    links: LinkService,
    health: LinkHealth,
    admins: BoundAdminPolicy,
    home: HomeTab | None,
    work: Work,
    doctor: Doctor | None,
) -> None:
    await ack()
    asked_at = datetime.now(UTC)  # before waiting for a work slot
    words = (command.get("text") or "").split()
    sub = words[0].lower() if words else "help"
    arg = words[1] if len(words) > 1 else None
    team_id, user_id = command["team_id"], command["user_id"]
    if sub not in ("link", "status", "unlink", "history", "doctor", *OVERVIEW) or len(words) > 2:
        await reply(respond, blocks.help_message())
        return
    async with answering(respond), work:
        if sub == "doctor":
            await require_admin(admins, respond, team_id, user_id, "run the doctor")
            await _doctor(respond, doctor, team_id)
            return
        if sub == "accounts":
            await reply(respond, blocks.accounts_message(await links.accounts(team_id)))
            return
        account_id = parse_account_id(arg)
        if sub == "status":
            await _status(respond, links, health, team_id, user_id, account_id, asked_at)
            return
        if sub == "channel":
            await require_admin(admins, respond, team_id, user_id, "choose notification channels")
            await _channel(respond, client, links, home, command, account_id)
            return
        action = "see the history of" if sub == "history" else sub
        await require_admin(admins, respond, team_id, user_id, f"{action} VCC accounts")
        if sub == "history":
            await reply(
                respond, blocks.history(account_id, await links.history(team_id, account_id))
            )
            return
        view = await links.account(team_id, account_id)
        if sub == "link":
            await reply(respond, blocks.link_prompt(view))
        elif view.status == LinkStatus.UNLINKED:
            raise NotLinked(account_id)
        else:
            await reply(respond, blocks.unlink_warning(view))


async def _status(
    respond: AsyncRespond,
    links: LinkService,
    health: LinkHealth,
    team_id: str,
    user_id: str,
    account_id: str,
    asked_at: datetime,
) -> None:
    """One answer, after a bounded check: a slash command's response_url cannot replace
    what it posted before (only a click's can), so there is no "checking…" to take back."""
    # The check reads the account (and checks it only if it is linked): no read before it.
    check = await health.check(team_id, account_id, actor=user_id, asked_at=asked_at)
    history = await links.history(team_id, account_id, limit=3)
    if check.account.status == LinkStatus.LINKED:
        await reply(respond, blocks.status(check.account, check, history=history))
    else:
        await reply(respond, blocks.status(check.account, history=history))


async def _channel(
    respond: AsyncRespond,
    client: AsyncWebClient,
    links: LinkService,
    home: HomeTab | None,
    command: dict[str, Any],
    account_id: str,
) -> None:
    """This channel becomes the account's notification channel, once a notice there has
    shown that the bot may post in it (a channel it is not in would lose every notice)."""
    channel_id, user_id = command["channel_id"], command["user_id"]
    chosen = blocks.channel_chosen_notice(account_id, user_id)
    try:
        await client.chat_postMessage(channel=channel_id, **chosen.kwargs())
    except SlackApiError as exc:
        await reply(respond, blocks.channel_refused(channel_id, slack_error(exc)))
        return
    view = await links.set_channel(
        command["team_id"], account_id, channel_id, user_id, command.get("enterprise_id")
    )
    if home is not None:
        home.changed(view.team_id)
    await reply(respond, blocks.channel_set(view))


async def _doctor(respond: AsyncRespond, doctor: Doctor | None, team_id: str) -> None:
    """Every check, on this workspace's accounts only (with many workspaces, the others'
    are not this admin's); each slow check is bounded, so the one answer comes in seconds."""
    if doctor is None:  # an app composed without it
        await reply(respond, blocks.help_message())
        return
    await reply(respond, blocks.doctor_report(await doctor.run(team_id)))


def register(app: AsyncApp) -> None:
    app.command("/vcc")(vcc)
