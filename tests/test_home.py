"""One place to see every account: the Home tab, /vcc accounts, /vcc channel, and the
broken-link DM to the admin who linked the account."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import Session

from bot import blocks, ids
from storage import repository as repo
from tests.support import (
    ADMIN,
    CHANNEL,
    MEMBER,
    TEAM,
    bot_with,
    buttons,
    link,
    text_of,
    wait_until,
)
from tests.support.database import account_row

OTHER_CHANNEL = "C0OTHER01"


def open_home(slack_client, slack, user: str = ADMIN) -> dict[str, Any]:
    """The user opens the Home tab; returns the view the bot publishes for it."""
    published = len([v for v in slack.views if v["user_id"] == user])
    answer = slack_client.event(slack.app_home_opened_event(TEAM, user))
    assert answer.status_code == 200
    return next_home(slack, user, published)


def next_home(slack, user: str, seen: int, timeout: float = 10.0) -> dict[str, Any]:
    """The first Home view published for `user` after the `seen` ones before it."""
    views = slack.wait_for(
        lambda: (v := [x["view"] for x in slack.views if x["user_id"] == user])[seen:] and v,
        timeout,
    )
    return views[seen]


def homes_of(slack, user: str) -> int:
    return len([v for v in slack.views if v["user_id"] == user])


def account_buttons(view: dict[str, Any], account: str) -> dict[str, dict[str, Any]]:
    block = next((b for b in view["blocks"] if b.get("block_id") == f"vcc_home_{account}"), None)
    return buttons({"blocks": [block]}) if block else {}


def seed_accounts(running, count: int, prefix: str = "acct") -> list[str]:
    """Unlinked accounts written straight into the bot's database (many, quickly)."""
    names = [f"{prefix}-{n:03d}" for n in range(count)]
    with Session(running.runtime.db.engine) as session:
        for name in names:
            repo.set_notify_channel(
                session, team_id=TEAM, account_id=name, channel_id=CHANNEL, now=datetime.now(UTC)
            )
        session.commit()
    return names


# ---- the Home tab ------------------------------------------------------------------------


def test_the_home_tab_lists_every_account_with_buttons_for_admins_only(
    bot, slack_client, slack, browser
):
    assert link(slack_client, browser, "acme").status_code == 200
    slack_client.replies(slack_client.command("channel globex", channel=OTHER_CHANNEL))

    view = open_home(slack_client, slack)
    shown = text_of(view)
    assert view["type"] == "home"
    assert "2 accounts" in shown and "workspace admin" in shown
    assert "*acme*" in shown and "Linked" in shown and "api@acme.example" in shown
    assert "Production" in shown and "Last checked with Salesforce" in shown
    assert f"<#{CHANNEL}>" in shown and f"<#{OTHER_CHANNEL}>" in shown
    assert "*globex*" in shown and "Unlinked" in shown
    acme = account_buttons(view, "acme")
    assert set(acme) == {ids.HOME_LINK, ids.HOME_CHECK, ids.HOME_UNLINK}
    assert acme[ids.HOME_LINK]["text"]["text"] == "Relink"
    # Unlinking from the Home tab shows the same warning first, in Slack's confirm dialog.
    confirm = acme[ids.HOME_UNLINK]["confirm"]
    assert "will stop looking up records and logging calls" in confirm["text"]["text"]
    assert set(account_buttons(view, "globex")) == {ids.HOME_LINK}

    member_view = open_home(slack_client, slack, user=MEMBER)
    assert "read-only" in text_of(member_view) and "*acme*" in text_of(member_view)
    assert not any(b["type"] == "actions" for b in member_view["blocks"])


def test_the_home_tab_is_published_again_when_a_link_changes(bot, slack_client, slack, browser):
    assert link(slack_client, browser, "acme").status_code == 200
    open_home(slack_client, slack)
    open_home(slack_client, slack, user=MEMBER)

    seen = homes_of(slack, ADMIN), homes_of(slack, MEMBER)
    assert link(slack_client, browser, "globex").status_code == 200
    admin_view = next_home(slack, ADMIN, seen[0])
    assert "*globex*" in text_of(admin_view) and "2 accounts" in text_of(admin_view)
    assert "*globex*" in text_of(next_home(slack, MEMBER, seen[1]))

    seen = homes_of(slack, ADMIN), homes_of(slack, MEMBER)
    warning = slack_client.replies(slack_client.command("unlink globex"))[0]
    slack_client.click(ids.UNLINK_CONFIRM, buttons(warning)[ids.UNLINK_CONFIRM]["value"])
    wait_until(
        lambda: (
            "*globex* · :heavy_minus_sign: *Unlinked*" in text_of(next_home(slack, MEMBER, seen[1]))
        ),
        10,
        "the member's tab showing globex unlinked",
    )


def test_home_buttons_link_check_and_unlink_and_are_checked_again(
    bot, slack_client, slack, salesforce, browser
):
    assert link(slack_client, browser, "acme").status_code == 200
    view = open_home(slack_client, slack)

    # Check now: a live check, its outcome shown at the top of the tab.
    seen = homes_of(slack, ADMIN)
    identity_calls = len([r for r in salesforce.production.requests if "/id/" in r.path])
    assert slack_client.home_click(view, ids.HOME_CHECK, "acme").status_code == 200
    view = next_home(slack, ADMIN, seen)
    assert "*acme*: :large_green_circle: Checked with Salesforce" in text_of(view)
    assert len([r for r in salesforce.production.requests if "/id/" in r.path]) > identity_calls

    # Link (Relink): the prompt goes to the admin's DM, whose buttons go on as usual.
    seen, dms = homes_of(slack, ADMIN), len(slack.dms_to(ADMIN))
    slack_client.home_click(view, ids.HOME_LINK, "acme")
    view = next_home(slack, ADMIN, seen)
    assert "I sent you the way to link *acme*" in text_of(view)
    prompt = slack.wait_for(lambda: slack.dms_to(ADMIN)[dms:])[0]
    assert {ids.LINK_PRODUCTION, ids.LINK_SANDBOX} <= set(buttons(prompt))

    # A member's click is refused, whatever the button: nothing changes.
    seen = homes_of(slack, MEMBER)
    slack_client.home_click(view, ids.HOME_UNLINK, "acme", user=MEMBER)
    refused = next_home(slack, MEMBER, seen)
    assert "Only workspace admins" in text_of(refused)
    assert account_row(bot.runtime.db.engine, "acme").status == "Linked"

    # Unlink: Slack asked for confirmation already (the button's confirm dialog).
    seen = homes_of(slack, ADMIN)
    slack_client.home_click(view, ids.HOME_UNLINK, "acme")
    view = next_home(slack, ADMIN, seen)
    assert "is now *Unlinked*" in text_of(view)
    assert account_row(bot.runtime.db.engine, "acme").status == "Unlinked"
    assert slack.wait_for(
        lambda: [m for m in slack.messages_to(CHANNEL) if "was unlinked" in text_of(m)]
    )
    assert salesforce.production.revoked  # the token was revoked at Salesforce


def test_the_home_tab_is_paginated_and_keeps_the_viewers_page(bot, slack_client, slack):
    names = seed_accounts(bot, 45)
    view = open_home(slack_client, slack)
    shown = text_of(view)
    assert "45 accounts · page 1 of 3" in shown
    assert names[0] in shown and names[19] in shown and names[20] not in shown
    assert len(view["blocks"]) <= blocks.VIEW_BLOCKS  # the fake refuses more, as Slack does
    pages = buttons(
        {"blocks": [b for b in view["blocks"] if b.get("block_id") == "vcc_home_pages"]}
    )
    assert set(pages) == {ids.HOME_NEXT}

    seen = homes_of(slack, ADMIN)
    slack_client.home_click(view, ids.HOME_NEXT, "2")  # the last page
    last = next_home(slack, ADMIN, seen)
    assert "page 3 of 3" in text_of(last) and names[44] in text_of(last)
    assert names[39] not in text_of(last)

    # A change elsewhere publishes the tab again on the page its viewer had turned to.
    seen = homes_of(slack, ADMIN)
    slack_client.replies(slack_client.command(f"channel {names[44]}", channel=OTHER_CHANNEL))
    again = next_home(slack, ADMIN, seen)
    assert "page 3 of 3" in text_of(again) and f"<#{OTHER_CHANNEL}>" in text_of(again)


def test_the_messages_tab_publishes_nothing(bot, slack_client, slack):
    answer = slack_client.event(slack.app_home_opened_event(TEAM, ADMIN, tab="messages"))
    assert answer.status_code == 200
    # The Home tab of another user is published after it: had the Messages tab published
    # anything, it would be there first.
    open_home(slack_client, slack, user=MEMBER)
    assert homes_of(slack, ADMIN) == 0


# ---- /vcc accounts -------------------------------------------------------------------------


def test_vcc_accounts_lists_every_account_of_the_workspace(bot, slack_client, slack, browser):
    empty = slack_client.replies(slack_client.command("accounts", user=MEMBER))[0]
    assert "No VCC accounts yet" in text_of(empty)
    assert link(slack_client, browser, "acme").status_code == 200
    names = seed_accounts(bot, 50)
    listed = slack_client.replies(slack_client.command("accounts", user=MEMBER))[0]
    shown = text_of(listed)
    assert "51 VCC accounts" in shown and "*acme*" in shown and "api@acme.example" in shown
    assert names[0] in shown and "… and 6 more" in shown and "Home tab" in shown
    assert shown.index("*acme*") < shown.index(names[0])  # linked before unlinked
    assert len(listed["blocks"]) <= blocks.MESSAGE_BLOCKS


# ---- /vcc channel --------------------------------------------------------------------------


def test_vcc_channel_moves_the_notices_and_a_relink_elsewhere_does_not(
    bot, slack_client, slack, salesforce, browser
):
    assert link(slack_client, browser, "acme").status_code == 200
    reply = slack_client.replies(slack_client.command("channel acme", channel=OTHER_CHANNEL))[0]
    assert f"will be posted in <#{OTHER_CHANNEL}>" in text_of(reply)
    assert [m for m in slack.messages_to(OTHER_CHANNEL) if "now gets the" in text_of(m)]
    assert account_row(bot.runtime.db.engine, "acme").notify_channel == OTHER_CHANNEL

    # Relinking from the first channel keeps the channel that was chosen.
    assert link(slack_client, browser, "acme").status_code == 200
    assert account_row(bot.runtime.db.engine, "acme").notify_channel == OTHER_CHANNEL
    assert slack.wait_for(
        lambda: [m for m in slack.messages_to(OTHER_CHANNEL) if "linked" in text_of(m).lower()]
    )
    history = text_of(slack_client.replies(slack_client.command("history acme"))[0])
    assert "Notification channel set" in history


def test_vcc_channel_is_for_admins_and_only_where_the_bot_can_post(bot, slack_client, slack):
    refused = slack_client.replies(slack_client.command("channel acme", user=MEMBER))[0]
    assert "Only workspace admins" in text_of(refused)
    assert account_row(bot.runtime.db.engine, "acme") is None

    slack.not_in_channel.add("G0PRIVATE1")
    answer = slack_client.replies(slack_client.command("channel acme", channel="G0PRIVATE1"))[0]
    assert "cannot be the notification channel" in text_of(answer)
    assert "Nothing changed" in text_of(answer)
    assert account_row(bot.runtime.db.engine, "acme") is None


# ---- a broken link, to the admin who linked it ---------------------------------------------


@pytest.fixture
def watched(settings, slack):
    """The bot with a one-second health interval."""
    with bot_with(settings, slack, vcc_health_interval=1) as served:
        yield served


def broken_dms(slack) -> list[dict[str, Any]]:
    return [m for m in slack.dms_to(ADMIN) if "which you linked, is broken" in text_of(m)]


def test_a_broken_link_dms_its_admin_once_with_a_relink_button(watched, salesforce, slack, browser):
    _, client = watched
    assert link(client, browser, "acme").status_code == 200
    salesforce.production.revoke_user_tokens(salesforce.api_user)
    dm = slack.wait_for(lambda: broken_dms(slack), timeout=15)[0]
    assert "*acme*" in text_of(dm) and "api@acme.example" in text_of(dm)
    assert buttons(dm)[ids.RELINK]["value"] == "acme"
    assert slack.wait_for(
        lambda: [m for m in slack.messages_to(CHANNEL) if "is broken" in text_of(m)]
    )

    # More passes find the same break: still one DM.
    passes = len([r for r in salesforce.production.requests if r.path == "/services/oauth2/token"])
    wait_until(
        lambda: (
            len([r for r in salesforce.production.requests if r.path == "/services/oauth2/token"])
            >= passes + 2
        ),
        10,
        "two more monitor passes",
    )
    assert len(broken_dms(slack)) == 1

    # Its Relink button brings the link prompt, in place of the DM's message.
    url = client.click(ids.RELINK, "acme", channel=slack.im_channel(ADMIN) or CHANNEL)
    prompt = client.replies(url)[0]
    assert {ids.LINK_PRODUCTION, ids.LINK_SANDBOX} <= set(buttons(prompt))
