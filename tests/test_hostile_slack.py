"""Hostile input from Slack's side: malformed and repeated requests, values that try to
format or ping, another workspace's data, a burst of live checks, a slow auth.test.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from bot import ids
from storage.models import AuditEvent, LoginAttempt
from tests.support import (
    ADMIN,
    CHANNEL,
    TEAM,
    bot_with,
    command_fields,
    link,
    raw_text_of,
    start_link,
    text_of,
    wait_until,
)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    # One served bot answers every example: that is the point, not a leak between them.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def sqlite_only(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("about request handling, not storage: once is enough")


def rows(bot: Any, model: type) -> list[Any]:
    with bot.runtime.db.transaction(write=False) as session:
        return list(session.exec(select(model)).all())


# ---- row 2: malformed commands and payloads answer 200 or 400, never 500 --------------------


def test_a_payload_that_is_not_json_is_a_400(slack_client, database_url):
    sqlite_only(database_url)
    response = slack_client.post(urlencode({"payload": "not-json"}))
    assert response.status_code == 400


@FUZZ
@given(text=st.text(max_size=300))
def test_any_command_text_gets_an_answer(text, slack_client, database_url):
    sqlite_only(database_url)
    fields = command_fields(slack_client.fake, text)
    response = slack_client.post(urlencode(fields))
    assert response.status_code == 200
    slack_client.replies(fields["response_url"])  # and a reply: usage, or what was asked


def test_a_command_mentioning_payload_is_still_a_command(slack_client, database_url):
    sqlite_only(database_url)  # bolt takes any body containing "payload" for an interaction
    reply = slack_client.replies(slack_client.command("status payload-uk"))[0]
    assert "payload-uk" in text_of(reply) and "Unlinked" in text_of(reply)


def valid_click(slack_client: Any) -> dict[str, Any]:
    body, _ = slack_client.click_body(ids.LINK_PRODUCTION, "acme")
    return json.loads(dict(httpx.QueryParams(body))["payload"])


@FUZZ
@given(payload=JSON_VALUES)
def test_any_json_payload_is_answered_200_or_400(payload, slack_client, database_url):
    sqlite_only(database_url)
    response = slack_client.post(urlencode({"payload": json.dumps(payload)}))
    assert response.status_code in (200, 400), response.text


@FUZZ
@given(data=st.data())
def test_a_click_with_a_part_missing_or_mangled_is_answered_200_or_400(
    data, slack_client, database_url
):
    sqlite_only(database_url)
    payload = valid_click(slack_client)
    path = data.draw(st.sampled_from(["user", "team", "channel", "container", "actions"]))
    if data.draw(st.booleans()):
        payload.pop(path)
    else:
        payload[path] = data.draw(JSON_VALUES)
    if data.draw(st.booleans()):
        payload["actions"] = [{"action_id": data.draw(st.text(max_size=30)), "value": "acme"}]
    response = slack_client.post(urlencode({"payload": json.dumps(payload)}))
    assert response.status_code in (200, 400), response.text


@FUZZ
@given(metadata=st.text(max_size=60) | JSON_VALUES.map(json.dumps))
def test_a_modal_submission_with_odd_metadata_is_a_400_not_a_500(
    metadata, slack_client, database_url
):
    sqlite_only(database_url)
    view = {"callback_id": ids.CUSTOM_DOMAIN_VIEW, "private_metadata": metadata}
    response = slack_client.submit_view(
        view, {ids.MY_DOMAIN_BLOCK: {ids.MY_DOMAIN_INPUT: "acme.my.salesforce.com"}}
    )
    assert response.status_code in (200, 400), response.text


# ---- row 3: one login DM per click, whatever the deliveries --------------------------------


def login_dms(slack: Any) -> list[dict[str, Any]]:
    return [m for m in slack.dms_to(ADMIN) if "Log in to Salesforce" in text_of(m)]


def test_one_click_delivered_three_times_at_once_sends_one_login_dm(
    slack_client, slack, bot, caplog
):
    caplog.set_level(logging.INFO, logger="bot.listeners.actions")
    body, _ = slack_client.click_body(ids.LINK_PRODUCTION, "acme")
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(slack_client.post(body).status_code))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert statuses == [200, 200, 200]
    slack.wait_for(lambda: login_dms(slack))
    wait_until(lambda: caplog.text.count("ignored a repeated click") == 2, 10, "two ignored")
    assert len(login_dms(slack)) == 1
    assert len(rows(bot, LoginAttempt)) == 1


def test_a_click_replayed_within_five_minutes_sends_no_second_login_dm(
    slack_client, slack, bot, caplog
):
    caplog.set_level(logging.INFO, logger="bot.listeners.actions")
    body, _ = slack_client.click_body(ids.LINK_PRODUCTION, "acme")
    assert slack_client.post(body).status_code == 200
    slack.wait_for(lambda: login_dms(slack))
    assert slack_client.post(body).status_code == 200  # the same signed request, again
    wait_until(lambda: "ignored a repeated click" in caplog.text, 10, "the replay ignored")
    assert len(login_dms(slack)) == 1
    # A new click (another message) is a new request for a link, and gets one.
    slack_client.click(ids.LINK_PRODUCTION, "acme")
    slack.wait_for(lambda: len(login_dms(slack)) == 2)


# ---- row 6: another workspace's accounts are its own ---------------------------------------

TEAM_B, ADMIN_B, CHANNEL_B = "T0002", "UADMIN2", "C0TEAMB"


def test_one_workspace_is_never_told_another_workspaces_accounts(
    slack_client, slack, bot, browser, salesforce
):
    slack.add_user(ADMIN_B, is_admin=True, name="bea")
    for n in range(1, 6):  # workspace A links five accounts with its API user
        assert link(slack_client, browser, f"a-secret-{n}").status_code == 200
    wait_until(lambda: not bot.runtime.background.busy, 10, "the re-checks after linking")

    # Workspace B's admin logs in as the same API user: refused (five links), yet still a
    # sixth approval at Salesforce, which revokes A's oldest link.
    start = start_link(slack_client, "b-acct", user=ADMIN_B, team=TEAM_B, channel=CHANNEL_B)
    with httpx.Client(timeout=10) as b_browser:
        first = b_browser.get(start.login_url)
        assert first.status_code == 200
        page = b_browser.post(start.login_url, headers={"Origin": bot.url})
        page = b_browser.get(page.headers["location"])
        page = b_browser.get(page.headers["location"])
    assert "at most five" in page.text and "a-secret" not in page.text
    broken = slack.wait_for(
        lambda: [m for m in slack.messages_to(CHANNEL) if "is broken" in text_of(m)], 10
    )
    assert "a-secret-1" in text_of(broken[0])  # A's own channel is told, as for any break
    wait_until(lambda: not bot.runtime.background.busy, 10, "the re-check after the refusal")
    to_b = slack.dms_to(ADMIN_B) + slack.messages_to(CHANNEL_B)
    assert to_b and not [m for m in to_b if "a-secret" in raw_text_of(m)]
    # A's audit trail does not name B's admin as the one who broke it.
    events = [e for e in rows(bot, AuditEvent) if e.team_id == TEAM]
    assert {e.actor for e in events if e.event == "broken"} == {"monitor"}
    assert not [e for e in events if e.actor == ADMIN_B]


# ---- row 7: values from outside cannot ping, link or format ------------------------------------

HOSTILE_USERNAME = "<!channel>*b*_i_~s~`c`<https://evil.example|relink here>@acme.example"


def assert_neutral(message: dict[str, Any]) -> None:
    """No ping, no link, no formatting from the hostile username; still readable."""
    for part in (message["text"], json.dumps(message["blocks"])):
        assert "<!channel>" not in part and "<https://evil" not in part
        for marker in ("*b*", "_i_", "~s~", "`c`"):
            assert marker not in part  # each formatting character is followed by U+200B
    assert "&lt;!channel&gt;*b*_i_~s~`c`&lt;https://evil.example|relink here&gt;" in text_of(
        message
    )


def test_a_hostile_salesforce_username_is_escaped_in_blocks_and_fallback_text(
    slack_client, slack, bot, browser, salesforce
):
    salesforce.api_user.username = HOSTILE_USERNAME
    salesforce.api_user.permissions["PermissionsEditTask"] = False
    assert link(slack_client, browser, "acme").status_code == 400
    refusal = slack.wait_for(
        lambda: [m for m in slack.dms_to(ADMIN) if "Permissions missing" in text_of(m)]
    )[0]
    assert_neutral(refusal)

    salesforce.api_user.permissions["PermissionsEditTask"] = True
    assert link(slack_client, browser, "acme").status_code == 200
    status = slack_client.replies(slack_client.command("status acme"))[-1]
    assert_neutral(status)
    notice = slack.wait_for(
        lambda: [m for m in slack.messages_to(CHANNEL) if "was linked" in text_of(m)]
    )[0]
    assert_neutral(notice)


def test_hostile_command_text_is_escaped_in_the_answer(slack_client, database_url):
    sqlite_only(database_url)
    reply = slack_client.replies(slack_client.command("status <!here>*x*"))[0]
    for part in (reply["text"], json.dumps(reply["blocks"])):
        assert "<!here>" not in part and "*x*" not in part


# ---- row 17: live checks per person are limited ------------------------------------------


def test_live_checks_are_limited_per_person_and_the_last_result_shown(
    slack_client, browser, bot, salesforce
):
    sf = salesforce.production
    assert link(slack_client, browser, "acme").status_code == 200
    refreshes = lambda: sum(  # noqa: E731
        1 for r in list(sf.requests) if r.form.get("grant_type") == "refresh_token"
    )
    for _ in range(5):
        body = text_of(slack_client.replies(slack_client.command("status acme"))[-1])
        assert "the link works" in body and "several live checks" not in body
    assert refreshes() == 5
    body = text_of(slack_client.replies(slack_client.command("status acme"))[-1])
    assert "several live checks" in body and "the link works" in body
    assert refreshes() == 5
    # The limit is one person's: another member's check still goes to Salesforce.
    other = slack_client.command("status acme", user="UMEMBER1")
    assert "several live checks" not in text_of(slack_client.replies(other)[-1])
    assert refreshes() == 6


# ---- row 18: auth.test at start-up, not on the first request -------------------------------


def test_auth_test_is_done_at_start_up_before_healthz_says_ready(settings, slack, database_url):
    sqlite_only(database_url)
    slack.slow_next(lambda r: r.path == "/api/auth.test", 3.0)
    with bot_with(settings, slack) as (running, client):
        assert httpx.get(f"{running.url}/healthz", timeout=5).status_code == 503
        wait_until(
            lambda: httpx.get(f"{running.url}/healthz", timeout=5).status_code == 200,
            10,
            "ready once Slack has answered auth.test",
        )
        assert len(slack.calls_to("auth.test")) == 1
        fields = command_fields(slack, "help")
        response = client.post(urlencode(fields))
        assert response.status_code == 200 and response.elapsed.total_seconds() < 1
        client.replies(fields["response_url"])
        assert len(slack.calls_to("auth.test")) == 1  # the request did not ask again
