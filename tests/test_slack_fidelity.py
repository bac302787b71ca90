"""The bot against a fake Slack that behaves like the real one (bot/standins/slack.py lists
each behaviour with its source): rows of the platform-fidelity issue, one test each.
"""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import select

from bot import ids
from storage.models import AuditEvent
from tests.support import ADMIN, CHANNEL, link, text_of, wait_until

# ---- row 1: a slash command's response_url only adds messages --------------------------


def test_a_command_response_url_does_not_replace_what_it_posted(slack):
    url = slack.new_response_url(command=True)
    for text, replace in (("first", False), ("second", True)):
        answer = httpx.post(url, json={"text": text, "replace_original": replace}, timeout=5)
        assert answer.status_code == 200
    assert [m["text"] for m in slack.visible(url)] == ["first", "second"]
    clicked = slack.new_response_url()
    for text, replace in (("first", False), ("second", True)):
        httpx.post(clicked, json={"text": text, "replace_original": replace}, timeout=5)
    assert [m["text"] for m in slack.visible(clicked)] == ["second"]


def test_a_response_url_takes_five_posts_at_most(slack):
    url = slack.new_response_url(command=True)
    codes = [httpx.post(url, json={"text": str(n)}, timeout=5).status_code for n in range(6)]
    assert codes == [200] * 5 + [404]


# ---- row 2: every notice that cannot be posted reaches the admin who linked ----------------


def audit(bot, kind: str) -> list[AuditEvent]:
    with bot.runtime.db.transaction(write=False) as session:
        return [e for e in session.exec(select(AuditEvent)).all() if e.event == kind]


def test_a_broken_notice_in_an_archived_channel_goes_to_the_admin_and_the_audit_trail(
    slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    slack.archived.add(CHANNEL)
    salesforce.production.revoke_user_tokens(salesforce.api_user)
    body = text_of(slack_client.replies(slack_client.command("status acme", user="UMEMBER1"))[0])
    assert "Broken" in body
    dms = slack.wait_for(lambda: [m for m in slack.dms_to(ADMIN) if "is broken" in text_of(m)])
    assert "acme" in text_of(dms[0])
    fix = [m for m in slack.dms_to(ADMIN) if "could not post" in text_of(m)]
    assert fix and "is_archived" in text_of(fix[-1])
    # Health notices go out a moment after the check (grouped per channel): wait for it.
    failed = wait_until(lambda: audit(bot, "notice_failed"), 10, "the undelivered notice recorded")
    assert "broken notice" in failed[-1].detail and "is_archived" in failed[-1].detail


def test_an_unlinked_notice_in_a_channel_the_bot_left_goes_to_the_admin(
    slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    slack.not_in_channel.add(CHANNEL)
    slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, "acme"))
    dms = slack.wait_for(lambda: [m for m in slack.dms_to(ADMIN) if "was unlinked" in text_of(m)])
    assert "acme" in text_of(dms[0])
    assert any("not_in_channel" in (e.detail or "") for e in audit(bot, "notice_failed"))


@pytest.mark.parametrize("content_type", ["text/html", "text/plain", "application/json"])
def test_an_error_page_instead_of_slacks_json_is_reported_not_crashed_on(
    content_type, slack_client, bot, slack
):
    """A proxy's 502 page reaches slack_sdk as no dict with an error code: an empty dict
    (HTML), a string (plain text) or aiohttp's response (a body that is not JSON)."""
    slack.error_page_next("users.info", content_type=content_type)
    reply = text_of(slack_client.replies(slack_client.command("link acme"))[0])
    assert "could not confirm that you are a workspace admin" in reply
    assert "http_502" in reply and "Something went wrong" not in reply


# ---- row 3: slack_sdk's default retries are kept ------------------------------------------


def test_a_dropped_connection_to_slack_is_retried(slack_client, browser, bot, slack):
    slack.drop_next("chat.postMessage")  # the first post of the link: the admin's DM
    assert link(slack_client, browser, "acme").status_code == 200
    slack.wait_for(lambda: [m for m in slack.messages_to(CHANNEL) if "was linked" in text_of(m)])
    assert [m for m in slack.dms_to(ADMIN) if "Linked." in text_of(m)]


# ---- row 5: Slack's ssl_check ----------------------------------------------------------------


def test_ssl_check_is_answered_200_without_a_signature(bot):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    url = f"{bot.url}/slack/events"
    assert httpx.post(url, content="ssl_check=1&token=abc", headers=form).status_code == 200
    assert httpx.post(url, content="command=%2Fvcc", headers=form).status_code == 401


# ---- row 6: a confirmation dialog is plain text ------------------------------------------------


def test_the_unlink_confirm_dialog_is_plain_text_as_slack_requires(
    slack_client, browser, bot, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    (warning,) = slack_client.replies(slack_client.command("unlink acme"))  # Slack took it
    confirm = next(
        e["confirm"]
        for b in warning["blocks"]
        for e in b.get("elements", [])
        if e.get("action_id") == ids.UNLINK_CONFIRM
    )
    assert {confirm[k]["type"] for k in ("title", "text", "confirm", "deny")} == {"plain_text"}


# ---- row 7: the modal opens within its trigger's three seconds ---------------------------------


def test_the_custom_domain_modal_opens_in_time_when_slack_is_slow_to_say_who_is_admin(
    slack_client, bot, slack
):
    slack.slow_next(lambda r: r.path == "/api/users.info", 3.5)
    url = slack_client.click(ids.LINK_CUSTOM, "acme")
    slack.wait_for(lambda: slack.opened_views, timeout=10)
    assert slack.opened_views[0]["view"]["callback_id"] == ids.CUSTOM_DOMAIN_VIEW
    assert not [r for r in slack.responses(url) if "expired_trigger_id" in text_of(r)]
