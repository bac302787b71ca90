"""The Home tab: published when opened, and its buttons.

A click in a view carries no response_url: its outcome is shown by publishing the tab
again, with a line at the top. Each click is checked again, as everywhere: a button is no
proof of permission.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks, ids
from bot.admins import AdminCheckFailed, BoundAdminPolicy
from bot.domain import LinkError, parse_account_id
from bot.home import HomeTab
from bot.links import LinkHealth, LinkService
from bot.listeners.common import Work
from bot.messages import describe
from bot.notify import SlackNotifier
from bot.slack_errors import slack_error


@dataclass
class Click:
    """Who clicked on whose tab, and the line to show at its top afterwards."""

    team_id: str
    enterprise_id: str | None
    user_id: str
    account_id: str
    notice: str | None = None


class NotAllowed(Exception):
    pass


def _click(body: dict[str, Any], context: AsyncBoltContext) -> Click:
    user = body["user"]
    team_id = str((body.get("team") or {}).get("id") or user.get("team_id") or context.team_id)
    value = str(body["actions"][0].get("value", ""))
    return Click(team_id, context.enterprise_id, user["id"], value)


@asynccontextmanager
async def _answered(
    click: Click, home: HomeTab, links: LinkService, client: AsyncWebClient
) -> AsyncIterator[None]:
    """Publish the tab again after the click, with its outcome or what went wrong."""
    try:
        yield
    except NotAllowed:
        click.notice = ":no_entry: " + blocks.not_allowed("do this").text
    except LinkError as exc:
        title, detail = describe(exc)
        click.notice = f":warning: *{title}*\n{detail}"
    except AdminCheckFailed as exc:
        click.notice = f":warning: I could not confirm that you are an admin ({exc}). Try again."
    except SlackApiError as exc:
        click.notice = f":warning: Slack refused a step ({slack_error(exc)}). Try again."
    page = await links.viewed_home(click.team_id, click.user_id, click.enterprise_id)
    await home.publish(
        click.team_id,
        click.enterprise_id,
        click.user_id,
        page=page,
        notice=click.notice,
        client=client,
    )


async def _admin(admins: BoundAdminPolicy, click: Click) -> str:
    if not await admins.is_admin(click.team_id, click.user_id):
        raise NotAllowed()
    return parse_account_id(click.account_id)


async def home_opened(
    event: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    links: LinkService,
    home: HomeTab | None,
) -> None:
    if event.get("tab") != "home" or home is None or context.team_id is None:
        return  # the Messages tab, or no Home tab in this composition
    user_id = event["user"]
    page = await links.viewed_home(context.team_id, user_id, context.enterprise_id)
    await home.publish(context.team_id, context.enterprise_id, user_id, page=page, client=client)


async def turn_page(
    ack: AsyncAck,
    body: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    links: LinkService,
    home: HomeTab,
) -> None:
    await ack()
    click = _click(body, context)
    page = int(click.account_id) if click.account_id.isdigit() else 0
    page = await links.viewed_home(click.team_id, click.user_id, click.enterprise_id, page=page)
    await home.publish(click.team_id, click.enterprise_id, click.user_id, page=page, client=client)


async def link_from_home(
    ack: AsyncAck,
    body: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    links: LinkService,
    notifier: SlackNotifier,
    admins: BoundAdminPolicy,
    home: HomeTab,
    work: Work,
) -> None:
    """The link prompt (Production, Sandbox, Custom domain) goes to the admin's DM, where
    the flow goes on as after /vcc link."""
    await ack()
    click = _click(body, context)
    async with _answered(click, home, links, client), work:
        account_id = await _admin(admins, click)
        view = await links.account(click.team_id, account_id)
        await notifier.dm(view, click.user_id, blocks.link_prompt(view))
        click.notice = (
            f":envelope: I sent you the way to link *{blocks.escape(account_id)}* in our direct "
            "messages (the Messages tab above)."
        )


async def check_from_home(
    ack: AsyncAck,
    body: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    links: LinkService,
    health: LinkHealth,
    home: HomeTab,
    work: Work,
) -> None:
    await ack()
    click = _click(body, context)
    async with _answered(click, home, links, client), work:
        account_id = parse_account_id(click.account_id)
        check = await health.check(
            click.team_id, account_id, actor=click.user_id, reuse=False, rated=True
        )
        click.notice = blocks.check_result(check)
        home.changed(click.team_id)  # its last check moved for the other viewers too


async def unlink_from_home(
    ack: AsyncAck,
    body: dict[str, Any],
    context: AsyncBoltContext,
    client: AsyncWebClient,
    links: LinkService,
    admins: BoundAdminPolicy,
    home: HomeTab,
    work: Work,
) -> None:
    """Slack showed the warning in the button's confirm dialog before sending this."""
    await ack()
    click = _click(body, context)
    async with _answered(click, home, links, client), work:
        account_id = await _admin(admins, click)
        view = await links.unlink(click.team_id, account_id, click.user_id)
        click.notice = blocks.unlinked_result(view).text


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(home_opened)
    app.action(ids.HOME_PREVIOUS)(turn_page)
    app.action(ids.HOME_NEXT)(turn_page)
    app.action(ids.HOME_LINK)(link_from_home)
    app.action(ids.HOME_CHECK)(check_from_home)
    app.action(ids.HOME_UNLINK)(unlink_from_home)
