"""Button clicks and the custom-domain modal. Each click is checked again: a button is no
proof of permission."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks, ids
from bot.admins import BoundAdminPolicy
from bot.domain import (
    AttemptProblem,
    Environment,
    LinkError,
    LoginContext,
    LoginLinkProblem,
    SentMessage,
    parse_account_id,
    parse_my_domain,
)
from bot.links import LinkHealth, LinkService, LoginFlow
from bot.listeners.common import Work, answering, reply, require_admin
from bot.messages import describe
from bot.notify import SlackNotifier
from bot.slack_errors import slack_error

log = logging.getLogger(__name__)

LINKING = "link VCC accounts"
UNLINKING = "unlink VCC accounts"


def _who(body: dict[str, Any]) -> tuple[str, str]:
    user = body["user"]
    team_id = (body.get("team") or {}).get("id") or user.get("team_id")
    return team_id, user["id"]


def _value(body: dict[str, Any]) -> str:
    return str(body["actions"][0].get("value", ""))


async def _admin_click(
    body: dict[str, Any], respond: AsyncRespond, admins: BoundAdminPolicy, action: str
) -> tuple[str, str, str]:
    """Who clicked, in which workspace, on which account, once they are known to be admin."""
    team_id, user_id = _who(body)
    account_id = parse_account_id(_value(body))
    await require_admin(admins, respond, team_id, user_id, action)
    return team_id, user_id, account_id


def _channel(body: dict[str, Any]) -> str:
    return (body.get("channel") or {}).get("id") or body["container"]["channel_id"]


def _click_key(body: dict[str, Any], ctx: LoginContext) -> str:
    """One click, however often Slack delivers it: the message (or modal), user, account."""
    container = body.get("container") or {}
    where = container.get("message_ts") or (body.get("view") or {}).get("id") or ""
    return f"login:{ctx.team_id}:{where}:{ctx.user_id}:{ctx.account_id}"


async def _send_login(
    respond: AsyncRespond,
    login: LoginFlow,
    notifier: SlackNotifier,
    ctx: LoginContext,
    once: str,
) -> None:
    link = await login.start(ctx, once=once)
    if link is None:  # this click was already answered: a repeated delivery or a replay
        log.info("ignored a repeated click (%s on %s)", ctx.user_id, ctx.account_id)
        return
    # Replace the buttons, so a second click has nothing to hit.
    await reply(respond, blocks.check_your_dms(ctx.account_id, ctx.environment), replace=True)
    try:
        dm = await notifier.login_link(link)
    except SlackApiError as exc:
        # In place of "Check your DMs", which is not true.
        await reply(respond, blocks.login_dm_failed(slack_error(exc)), replace=True)
        return
    # Both the DM and "Check your DMs" will show how the login ends.
    await login.dm_sent(link, dm, respond.response_url)


async def choose_environment(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    login: LoginFlow,
    notifier: SlackNotifier,
    admins: BoundAdminPolicy,
    context: AsyncBoltContext,
    work: Work,
) -> None:
    await ack()
    async with answering(respond), work:
        team_id, user_id, account_id = await _admin_click(body, respond, admins, LINKING)
        environment = Environment(ids.LINK_ENVIRONMENTS[action["action_id"]])
        ctx = LoginContext(
            team_id,
            user_id,
            account_id,
            environment,
            _channel(body),
            enterprise_id=context.enterprise_id,
        )
        await _send_login(respond, login, notifier, ctx, _click_key(body, ctx))


async def choose_custom_domain(
    ack: AsyncAck,
    body: dict[str, Any],
    respond: AsyncRespond,
    client: AsyncWebClient,
    admins: BoundAdminPolicy,
) -> None:
    await ack()
    async with answering(respond):
        team_id, user_id = _who(body)
        account_id = parse_account_id(_value(body))
        if admins.known(team_id, user_id) is False:  # refused without a call to Slack
            await reply(respond, blocks.not_allowed(LINKING))
            return
        # A trigger_id expires 3 seconds after the click: open the modal before anything
        # that may wait on Slack. Its submission checks the admin again in any case.
        metadata = json.dumps(
            {"account": account_id, "channel": _channel(body), "response_url": body["response_url"]}
        )
        await client.views_open(
            trigger_id=body["trigger_id"], view=blocks.custom_domain_modal(account_id, metadata)
        )
        await require_admin(admins, respond, team_id, user_id, LINKING)


async def submit_custom_domain(
    ack: AsyncAck,
    body: dict[str, Any],
    view: dict[str, Any],
    login: LoginFlow,
    notifier: SlackNotifier,
    admins: BoundAdminPolicy,
    context: AsyncBoltContext,
    work: Work,
) -> None:
    value = view["state"]["values"][ids.MY_DOMAIN_BLOCK][ids.MY_DOMAIN_INPUT]["value"] or ""
    try:
        login_host = parse_my_domain(value)
    except LinkError as exc:
        # Slack shows this under the field and keeps the modal open.
        await ack(response_action="errors", errors={ids.MY_DOMAIN_BLOCK: describe(exc)[1]})
        return
    await ack()
    team_id, user_id = _who(body)
    meta = json.loads(view["private_metadata"])
    respond = AsyncRespond(response_url=meta["response_url"])
    async with answering(respond), work:
        account_id = parse_account_id(meta["account"])
        await require_admin(admins, respond, team_id, user_id, LINKING)
        ctx = LoginContext(
            team_id,
            user_id,
            account_id,
            Environment.CUSTOM,
            meta["channel"],
            login_host,
            enterprise_id=context.enterprise_id,
        )
        await _send_login(respond, login, notifier, ctx, _click_key(body, ctx))


async def relink(
    ack: AsyncAck,
    body: dict[str, Any],
    respond: AsyncRespond,
    links: LinkService,
    admins: BoundAdminPolicy,
    work: Work,
) -> None:
    await ack()
    async with answering(respond), work:
        team_id, _, account_id = await _admin_click(body, respond, admins, LINKING)
        view = await links.account(team_id, account_id)
        await reply(respond, blocks.link_prompt(view), replace=True)


async def check_now(
    ack: AsyncAck,
    body: dict[str, Any],
    respond: AsyncRespond,
    links: LinkService,
    health: LinkHealth,
    work: Work,
) -> None:
    """A new live check, shown in place of the status it was clicked on."""
    await ack()
    async with answering(respond), work:
        team_id, user_id = _who(body)
        account_id = parse_account_id(_value(body))
        # Salesforce may take seconds: say what is happening where the status was.
        await reply(respond, blocks.checking(account_id), replace=True)
        try:
            check = await health.check(team_id, account_id, actor=user_id, reuse=False, rated=True)
            history = await links.history(team_id, account_id, limit=3)
        except LinkError as exc:  # in place of "Checking…", which would stay forever
            await reply(respond, blocks.failure(exc, account_id), replace=True)
            return
        await reply(respond, blocks.status(check.account, check, history=history), replace=True)


_LOGIN_ID = re.compile(r"[0-9]{1,18}")


async def send_new_link(
    ack: AsyncAck,
    body: dict[str, Any],
    respond: AsyncRespond,
    login: LoginFlow,
    notifier: SlackNotifier,
    admins: BoundAdminPolicy,
    work: Work,
) -> None:
    """The "Send me a new link" button of an ended login DM: a new login for the same
    account, environment and channel, put in place of that DM.

    In place rather than a new message: the DM the admin is looking at becomes the live
    link, and the conversation keeps one message per login attempt instead of a trail of
    dead ones. Each DM version's button names its own ended login, so the same click
    delivered again is one new link, and the next ending's button a new one.
    """
    await ack()
    async with answering(respond), work:
        team_id, user_id = _who(body)
        await require_admin(admins, respond, team_id, user_id, LINKING)
        value, ts = _value(body), (body.get("container") or {}).get("message_ts")
        if not _LOGIN_ID.fullmatch(value) or not isinstance(ts, str):
            raise LoginLinkProblem(AttemptProblem.UNKNOWN)
        ended = int(value)
        once = f"again:{team_id}:{ended}:{user_id}"
        link = await login.again(team_id, user_id, ended, once=once)
        if link is None:  # this click was already answered: a repeated delivery or a replay
            log.info("ignored a repeated click (%s, new login link)", user_id)
            return
        where = SentMessage(_channel(body), ts)
        try:
            dm = await notifier.login_link(link, replacing=where)
        except SlackApiError as exc:
            await reply(respond, blocks.login_dm_failed(slack_error(exc)))
            return
        await login.dm_sent(link, dm)


async def open_login(ack: AsyncAck) -> None:
    # The button only opens a URL, but Slack still sends the click and wants an ack.
    await ack()


async def confirm_unlink(
    ack: AsyncAck,
    body: dict[str, Any],
    respond: AsyncRespond,
    links: LinkService,
    admins: BoundAdminPolicy,
    work: Work,
) -> None:
    await ack()
    async with answering(respond, _value(body)), work:
        team_id, user_id, account_id = await _admin_click(body, respond, admins, UNLINKING)
        # On failure `answering` replies beside the warning, whose buttons stay for a retry.
        view = await links.unlink(team_id, account_id, user_id)
        await reply(respond, blocks.unlinked_result(view), replace=True)


async def cancel_unlink(
    ack: AsyncAck,
    body: dict[str, Any],
    respond: AsyncRespond,
    admins: BoundAdminPolicy,
    work: Work,
) -> None:
    await ack()
    async with answering(respond), work:
        _, _, account_id = await _admin_click(body, respond, admins, UNLINKING)
        await reply(respond, blocks.nothing_changed(account_id), replace=True)


def register(app: AsyncApp) -> None:
    app.action(ids.LINK_PRODUCTION)(choose_environment)
    app.action(ids.LINK_SANDBOX)(choose_environment)
    app.action(ids.LINK_CUSTOM)(choose_custom_domain)
    app.view(ids.CUSTOM_DOMAIN_VIEW)(submit_custom_domain)
    app.action(ids.RELINK)(relink)
    app.action(ids.CHECK_NOW)(check_now)
    app.action(ids.LOGIN_OPEN)(open_login)
    app.action(ids.LOGIN_AGAIN)(send_new_link)
    app.action(ids.UNLINK_CONFIRM)(confirm_unlink)
    app.action(ids.UNLINK_CANCEL)(cancel_unlink)
