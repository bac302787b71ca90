"""The messages of a login tell the truth over time: the login DM and the click's "Check your
DMs" reply show how the login ended (linked, cancelled, refused, withdrawn, expired), the
old login button never stays, and an ended DM offers "Send me a new link".

End to end through the served bot and the fakes: signed clicks, the DM'd link followed by
the browser through the fake Salesforce. Time passes the way the other tests make it pass:
a login link's expiry is moved into the past in the database.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import col, select

from bot import blocks, ids
from bot.cli import build
from bot.domain import (
    Environment,
    LinkResult,
    LinkStatus,
    LoginCancelled,
    LoginClosed,
    LoginContext,
    LoginEnd,
    SentMessage,
)
from storage.models import LoginAttempt
from tests.support import (
    ADMIN,
    CHANNEL,
    MEMBER,
    SlackClient,
    bot_with,
    buttons,
    link,
    text_of,
    through_salesforce,
    wait_until,
)
from tests.test_blocks import (
    account_ids,
    account_views,
    check_message,
    link_errors,
    no_deadline,
    times,
)
from tests.test_no_secrets_logged import from_the_bot

# ---- helpers ---------------------------------------------------------------------------


@dataclass
class Begun:
    """A login as the admin started it: the click's response_url and the login DM."""

    click_url: str
    dm: SentMessage
    login_url: str


def attempts(running: Any) -> list[LoginAttempt]:
    with running.runtime.db.transaction(write=False) as session:
        return list(session.exec(select(LoginAttempt).order_by(col(LoginAttempt.id))).all())


def begin(client: SlackClient, running: Any, account: str = "acme") -> Begun:
    """/vcc link, Production, and the login DM, once the bot has noted where it went (the
    bot records it right after posting it; an admin takes longer than that to click)."""
    fake = client.fake
    prompt = client.replies(client.command(f"link {account}"))[0]
    before = len(fake.dms_to(ADMIN))
    click_url = client.click(ids.LINK_PRODUCTION, buttons(prompt)[ids.LINK_PRODUCTION]["value"])
    assert "Check your DMs" in text_of(client.replies(click_url)[0])
    dm = fake.wait_for(lambda: len(fake.dms_to(ADMIN)) > before and fake.dms_to(ADMIN)[-1])
    wait_until(lambda: attempts(running)[-1].dm_ts == dm["ts"], 5, "the login DM recorded")
    return Begun(click_url, SentMessage(dm["channel"], dm["ts"]), login_url_of(dm))


def login_url_of(dm: dict[str, Any]) -> str:
    return buttons(dm)[ids.LOGIN_OPEN]["url"]


def dm_now(slack: Any, dm: SentMessage) -> dict[str, Any]:
    return next(m for m in slack.dms_to(ADMIN) if m["ts"] == dm.ts)


def updates_of(slack: Any, dm: SentMessage) -> list[dict[str, Any]]:
    return [u for u in list(slack.updates) if (u["channel"], u["ts"]) == (dm.channel, dm.ts)]


def updated(slack: Any, dm: SentMessage, words: str, timeout: float = 10) -> dict[str, Any]:
    """The login DM, once Slack was asked to update it to a text with `words`."""
    slack.wait_for(lambda: [u for u in updates_of(slack, dm) if words in text_of(u)], timeout)
    return dm_now(slack, dm)


def shown_reply(slack: Any, click_url: str, words: str, timeout: float = 10) -> dict[str, Any]:
    """What the admin sees where they clicked, once it says `words`."""
    return slack.wait_for(
        lambda: (v := slack.visible(click_url)) and words in text_of(v[-1]) and v[-1], timeout
    )


def expire(running: Any, *, started_minutes_ago: float = 11) -> None:
    """Time passes: every login link was sent that long ago and has expired."""
    now = datetime.now(UTC)
    with running.runtime.db.transaction() as session:
        for attempt in session.exec(select(LoginAttempt)).all():
            attempt.created_at = now - timedelta(minutes=started_minutes_ago)
            attempt.expires_at = now - timedelta(minutes=started_minutes_ago - 10)
            session.add(attempt)


def click_on_dm(client: SlackClient, dm: dict[str, Any], *, user: str = ADMIN) -> tuple[str, str]:
    """The body Slack posts for "Send me a new link" clicked in the DM, and its response_url."""
    value = buttons(dm)[ids.LOGIN_AGAIN]["value"]
    return client.click_body(
        ids.LOGIN_AGAIN, value, user=user, channel=dm["channel"], message_ts=dm["ts"]
    )


def sweep_elsewhere(settings: Any) -> int:
    """One sweep of another replica on the same database, run to its end; how many it told."""
    replica = build(settings)
    try:
        return asyncio.run(replica.core.login.close_ended())
    finally:
        replica.db.dispose()


@pytest.fixture
def swept(settings: Any, slack: Any) -> Iterator[tuple[Any, SlackClient]]:
    """The bot with a one-second monitor tick: its sweep runs every second."""
    with bot_with(settings, slack, vcc_health_interval=1) as served:
        yield served


# ---- the flow ends at the callback ---------------------------------------------------------


def test_a_linked_login_dm_shows_org_and_user_and_loses_its_button(
    slack_client, bot, browser, salesforce, slack, caplog
):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="vcc")
    begun = begin(slack_client, bot)
    assert through_salesforce(browser, begun.login_url).status_code == 200

    dm = updated(slack, begun.dm, "Linked.")
    body = text_of(dm)
    assert salesforce.api_user.org_id in body and "vcc-api@acme.example" in body
    assert "Production" in body
    assert buttons(dm) == {}  # the login button is gone, and nothing offers a new one
    reply = shown_reply(slack, begun.click_url, "is linked")
    assert salesforce.api_user.org_id in text_of(reply) and "vcc-api@acme.example" in text_of(reply)
    assert reply["replace_original"] is True
    # The login DM tells it: no second "Linked." DM; the channel still hears of it.
    slack.wait_for(lambda: [m for m in slack.messages_to(CHANNEL) if "was linked" in text_of(m)])
    assert [m["ts"] for m in slack.dms_to(ADMIN)] == [begun.dm.ts]

    # The response_url is a capability: stored encrypted, never logged.
    (row,) = attempts(bot)
    assert row.closed_at is not None
    assert row.reply_url_encrypted and begun.click_url not in row.reply_url_encrypted
    rid = begun.click_url.rsplit("/", 1)[-1]
    logged = [logging.Formatter().format(r) for r in caplog.records if from_the_bot(r)]
    assert logged and [line for line in logged if rid in line] == []


def test_a_login_denied_at_salesforce_shows_cancelled_and_offers_a_new_link(
    slack_client, bot, browser, salesforce, slack
):
    salesforce.production.authorize_error = "access_denied"
    begun = begin(slack_client, bot)
    assert through_salesforce(browser, begun.login_url).status_code == 400

    dm = updated(slack, begun.dm, "Linking cancelled")
    assert "did not allow access" in text_of(dm)
    assert set(buttons(dm)) == {ids.LOGIN_AGAIN}
    assert "Linking cancelled" in text_of(shown_reply(slack, begun.click_url, "cancelled"))
    assert [m["ts"] for m in slack.dms_to(ADMIN)] == [begun.dm.ts]


def test_a_refused_login_says_why_in_plain_words(slack_client, bot, browser, salesforce, slack):
    salesforce.api_user.permissions["PermissionsEditTask"] = False
    begun = begin(slack_client, bot)
    assert through_salesforce(browser, begun.login_url).status_code == 400

    dm = updated(slack, begun.dm, "Permissions missing")
    assert "Edit Tasks" in text_of(dm) and "create a task at the end of every call" in text_of(dm)
    assert set(buttons(dm)) == {ids.LOGIN_AGAIN}
    assert "Edit Tasks" in text_of(shown_reply(slack, begun.click_url, "Permissions missing"))


# ---- the flow ends with nobody there: the monitor's sweep tells it ---------------------------


def test_an_expired_login_link_is_told_by_the_sweep(swept, slack):
    running, client = swept
    begun = begin(client, running)
    assert updates_of(slack, begun.dm) == []
    expire(running)

    dm = updated(slack, begun.dm, "expired")
    assert "Nothing was linked" in text_of(dm)
    assert set(buttons(dm)) == {ids.LOGIN_AGAIN}  # the login button is gone
    assert "new link" in text_of(shown_reply(slack, begun.click_url, "expired"))
    (row,) = attempts(running)
    assert row.closed_at is not None  # claimed: no other sweep tells it again
    assert len(updates_of(slack, begun.dm)) == 1


def test_a_reply_older_than_slack_keeps_response_urls_is_left_alone(
    slack_client, bot, settings, slack
):
    begun = begin(slack_client, bot)
    posts = len(slack.responses(begun.click_url))
    expire(bot, started_minutes_ago=31)  # Slack takes a response_url for 30 minutes
    # Another replica's sweep, run to its end here (the served bot's is a minute away).
    assert sweep_elsewhere(settings) == 1
    assert "expired" in text_of(dm_now(slack, begun.dm))
    assert len(slack.responses(begun.click_url)) == posts
    assert "Check your DMs" in text_of(slack.visible(begun.click_url)[-1])


def test_a_login_link_withdrawn_by_an_unlink_says_so(swept, slack, browser):
    running, client = swept
    assert link(client, browser, "acme").status_code == 200
    begun = begin(client, running)  # a relink is started...
    unlinked = client.replies(client.click(ids.UNLINK_CONFIRM, "acme"))[0]  # ...then unlinked
    assert "now *Unlinked*" in text_of(unlinked)

    dm = updated(slack, begun.dm, "withdrawn")
    assert "unlinked" in text_of(dm)
    assert buttons(dm) == {}  # an unlink was someone's choice: no new link offered
    assert "withdrawn" in text_of(shown_reply(slack, begun.click_url, "withdrawn"))


def test_a_callback_cut_short_leaves_a_dm_the_sweep_calls_used(slack_client, bot, settings, slack):
    begun = begin(slack_client, bot)
    with bot.runtime.db.transaction() as session:  # called back, then the process died
        (attempt,) = session.exec(select(LoginAttempt)).all()
        attempt.consumed_at = datetime.now(UTC) - timedelta(minutes=1)
        session.add(attempt)
    assert sweep_elsewhere(settings) == 0  # maybe a callback still at work
    with bot.runtime.db.transaction() as session:
        (attempt,) = session.exec(select(LoginAttempt)).all()
        attempt.consumed_at = datetime.now(UTC) - timedelta(minutes=6)
        session.add(attempt)
    assert sweep_elsewhere(settings) == 1

    dm = dm_now(slack, begun.dm)
    assert "was used" in text_of(dm) and "/vcc status acme" in text_of(dm)
    assert set(buttons(dm)) == {ids.LOGIN_AGAIN}
    assert "was used" in text_of(slack.visible(begun.click_url)[-1])


def test_two_replicas_sweeping_at_once_tell_an_expired_login_once(
    slack_client, bot, settings, slack
):
    begun = begin(slack_client, bot)
    expire(bot)
    posts = len(slack.responses(begun.click_url))
    # Two more replicas on the same database (the served bot's own sweep is a minute away).
    replicas = [build(settings) for _ in range(2)]
    barrier = threading.Barrier(len(replicas))
    told: list[int] = []

    def sweep(runtime: Any) -> None:
        barrier.wait(timeout=30)
        told.append(asyncio.run(runtime.core.login.close_ended()))

    threads = [threading.Thread(target=sweep, args=(r,)) for r in replicas]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        for runtime in replicas:
            runtime.db.dispose()
    assert sorted(told) == [0, 1]
    assert len(updates_of(slack, begun.dm)) == 1
    assert len(slack.responses(begun.click_url)) == posts + 1


# ---- "Send me a new link" ------------------------------------------------------------------


def test_send_me_a_new_link_puts_a_new_login_in_place_of_the_ended_one(
    swept, slack, browser, salesforce, caplog
):
    caplog.set_level(logging.INFO, logger="bot.listeners.actions")
    running, client = swept
    begun = begin(client, running)
    expire(running)
    ended = updated(slack, begun.dm, "expired")

    body, response_url = click_on_dm(client, ended)
    assert client.post(body).status_code == 200
    assert client.post(body).status_code == 200  # the same click, delivered again
    wait_until(lambda: "ignored a repeated click" in caplog.text, 10, "the repeat ignored")

    def new_login_url() -> str | None:
        shown = dm_now(slack, begun.dm)
        return login_url_of(shown) if ids.LOGIN_OPEN in buttons(shown) else None

    new_url = slack.wait_for(new_login_url)
    assert new_url != begun.login_url
    wait_until(lambda: len(attempts(running)) == 2 and attempts(running)[1].dm_ts, 5, "noted")
    _, again = attempts(running)
    assert (again.account_id, again.environment, again.channel_id) == (
        "acme",
        "production",
        CHANNEL,
    )
    assert again.dm_ts == begun.dm.ts and again.reply_url_encrypted is None
    assert len(updates_of(slack, begun.dm)) == 2  # expired, then the new link: one each
    assert slack.responses(response_url) == []

    assert through_salesforce(browser, new_url).status_code == 200
    linked = updated(slack, begun.dm, "Linked.")
    assert buttons(linked) == {} and salesforce.api_user.org_id in text_of(linked)
    assert [m["ts"] for m in slack.dms_to(ADMIN)] == [begun.dm.ts]


def test_send_me_a_new_link_is_refused_to_a_member(swept, slack):
    running, client = swept
    begun = begin(client, running)
    expire(running)
    ended = updated(slack, begun.dm, "expired")

    body, response_url = click_on_dm(client, ended, user=MEMBER)
    assert client.post(body).status_code == 200
    assert "Only workspace admins" in text_of(client.replies(response_url)[0])
    assert len(attempts(running)) == 1
    assert ids.LOGIN_AGAIN in buttons(dm_now(slack, begun.dm))  # the DM is as it was


# ---- other replies that tell the truth -------------------------------------------------------


def test_check_now_says_it_is_checking_then_shows_the_result(slack_client, bot, browser):
    assert link(slack_client, browser, "acme").status_code == 200
    status = slack_client.replies(slack_client.command("status acme"))[-1]
    click = slack_client.click(ids.CHECK_NOW, buttons(status)[ids.CHECK_NOW]["value"])
    checking, result = slack_client.replies(click, 2)
    assert "Checking VCC account *acme* with Salesforce…" in text_of(checking)
    assert checking["replace_original"] is True and result["replace_original"] is True
    assert "the link works" in text_of(result)
    assert [text_of(m) for m in slack_client.fake.visible(click)] == [text_of(result)]


def test_the_unlink_warning_is_replaced_by_its_outcome(slack_client, bot, browser):
    assert link(slack_client, browser, "acme").status_code == 200
    warning = slack_client.replies(slack_client.command("unlink acme"))[0]
    assert set(buttons(warning)) == {ids.UNLINK_CONFIRM, ids.UNLINK_CANCEL}

    kept = slack_client.click(ids.UNLINK_CANCEL, "acme")
    (cancelled,) = slack_client.replies(kept)
    assert cancelled["replace_original"] is True and "Nothing changed" in text_of(cancelled)
    assert buttons(cancelled) == {}

    gone = slack_client.click(ids.UNLINK_CONFIRM, "acme")
    (unlinked,) = slack_client.replies(gone)
    assert unlinked["replace_original"] is True and "now *Unlinked*" in text_of(unlinked)
    assert buttons(unlinked) == {}


# ---- the builders keep within Slack's limits --------------------------------------------------


@no_deadline
@given(
    account_ids,
    st.sampled_from(Environment),
    st.sampled_from(LoginEnd),
    times,
    st.none() | account_views(LinkStatus.LINKED),
    st.none() | link_errors,
)
def test_ended_login_messages_keep_within_slacks_limits(
    account_id, environment, end, when, view, error
):
    ctx = LoginContext("T0001", "U0123ABCDEF", account_id, environment, "C0123ABCDEF")
    closed = LoginClosed(
        context=ctx,
        end=end,
        attempt_id=2**62,
        started_at=when,
        expires_at=when,
        result=LinkResult(view, False, []) if view is not None else None,
        error=error,
    )
    dm = check_message(blocks.login_closed_dm(closed))
    check_message(blocks.login_closed_reply(closed))
    check_message(blocks.checking(account_id))
    assert ids.LOGIN_OPEN not in buttons(dm)


def test_an_ended_dm_offers_a_new_link_only_where_trying_again_makes_sense():
    ctx = LoginContext("T0001", "U0123ABCDEF", "acme", Environment.SANDBOX, "C0123ABCDEF")
    now = datetime.now(UTC)
    offered = {
        end
        for end in LoginEnd
        if ids.LOGIN_AGAIN
        in buttons(
            blocks.login_closed_dm(
                LoginClosed(ctx, end, 7, now, now, error=LoginCancelled())
            ).kwargs()
        )
    }
    assert offered == {LoginEnd.CANCELLED, LoginEnd.REFUSED, LoginEnd.EXPIRED, LoginEnd.USED}
