"""The /vcc slash command."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from bot import blocks
from bot.admins import BoundAdminPolicy
from bot.domain import LinkStatus, NotLinked, parse_account_id
from bot.links import LinkHealth, LinkService
from bot.listeners.common import Work, answering, reply, require_admin


async def vcc(
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    links: LinkService,
    health: LinkHealth,
    admins: BoundAdminPolicy,
    work: Work,
) -> None:
    await ack()
    asked_at = datetime.now(UTC)  # before waiting for a work slot
    words = (command.get("text") or "").split()
    sub = words[0].lower() if words else "help"
    arg = words[1] if len(words) > 1 else None
    team_id, user_id = command["team_id"], command["user_id"]
    if sub not in ("link", "status", "unlink", "history") or len(words) > 2:
        await reply(respond, blocks.help_message())
        return
    async with answering(respond), work:
        account_id = parse_account_id(arg)
        if sub == "status":
            await _status(respond, links, health, team_id, user_id, account_id, asked_at)
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


def register(app: AsyncApp) -> None:
    app.command("/vcc")(vcc)
