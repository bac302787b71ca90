"""The /vcc slash command."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot import blocks
from bot.admins import AdminPolicy
from bot.domain import NotLinked, parse_account_id
from bot.links import LinkService
from bot.listeners.common import answering, reply, require_admin
from storage.models import LinkStatus


async def vcc(
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    links: LinkService,
    admins: AdminPolicy,
) -> None:
    await ack()
    words = (command.get("text") or "").split()
    sub = words[0].lower() if words else "help"
    arg = words[1] if len(words) > 1 else None
    team_id, user_id = command["team_id"], command["user_id"]
    if sub not in ("link", "status", "unlink") or len(words) > 2:
        await reply(respond, blocks.help_message())
        return
    async with answering(respond):
        account_id = parse_account_id(arg)
        if sub == "status":
            await _status(respond, links, team_id, account_id)
            return
        await require_admin(admins, respond, team_id, user_id, f"{sub} VCC accounts")
        view = await links.account(team_id, account_id)
        if sub == "link":
            await reply(respond, blocks.link_prompt(view))
        elif view.status == LinkStatus.UNLINKED:
            raise NotLinked(account_id)
        else:
            await reply(respond, blocks.unlink_warning(view))


async def _status(respond: AsyncRespond, links: LinkService, team_id: str, account_id: str) -> None:
    view = await links.account(team_id, account_id)
    if view.status != LinkStatus.LINKED:
        await reply(respond, blocks.status(view))
        return
    await reply(respond, blocks.status(view, checking=True))
    check = await links.check(team_id, account_id)
    await reply(respond, blocks.status(check.account, check), replace=True)


def register(app: AsyncApp) -> None:
    app.command("/vcc")(vcc)
