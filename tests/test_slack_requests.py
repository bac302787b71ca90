"""POST /slack/events accepts only requests signed by Slack, recently, with the right secret."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier

from tests.support import SIGNING_SECRET, SlackClient, command_fields, text_of


def command_body(slack, text: str) -> tuple[str, str]:
    """A `/vcc <text>` request body as Slack sends it, and its response_url."""
    fields = command_fields(slack, text)
    return urlencode(fields), fields["response_url"]


def assert_help(message) -> None:
    body = text_of(message)
    for usage in ("/vcc link", "/vcc status", "/vcc unlink"):
        assert usage in body


def assert_never_answered(slack_client, response_url: str) -> None:
    # A valid request sent afterwards has been answered, so the refused one had its chance.
    slack_client.replies(slack_client.command("help"))
    assert slack_client.fake.responses(response_url) == []


def test_a_signed_help_command_is_answered_with_usage(slack_client, slack):
    body, response_url = command_body(slack, "help")
    assert slack_client.post(body).status_code == 200
    assert_help(slack_client.replies(response_url)[0])


def test_an_unknown_subcommand_gets_the_help(slack_client):
    assert_help(slack_client.replies(slack_client.command("frobnicate"))[0])


def test_a_request_signed_with_another_secret_is_refused_and_ignored(slack_client, bot, slack):
    forger = SlackClient(bot, slack, secret="wrong")
    body, response_url = command_body(slack, "help")
    try:
        assert forger.post(body).status_code == 401
    finally:
        forger.http.close()
    assert_never_answered(slack_client, response_url)


def test_a_request_without_signature_headers_is_refused(slack_client, slack):
    body, response_url = command_body(slack, "help")
    assert slack_client.post(body, sign=False).status_code == 401
    assert_never_answered(slack_client, response_url)


def test_a_correctly_signed_request_six_minutes_old_is_refused(slack_client, slack):
    body, response_url = command_body(slack, "help")
    response = slack_client.post(body, timestamp=int(time.time()) - 6 * 60)
    assert response.status_code == 401
    assert_never_answered(slack_client, response_url)


@pytest.mark.parametrize(
    "timestamp",
    [
        "abc",
        "-1",
        "1e9",
        "",
        "\u00b2",  # a Unicode digit: str.isdigit() says yes, int() in slack_sdk says no
    ],
    ids=["letters", "negative", "exponent", "empty", "superscript-two"],
)
def test_a_timestamp_that_is_not_a_number_is_refused_not_an_error(timestamp, slack_client, slack):
    body, response_url = command_body(slack, "help")
    # Signed over the bad timestamp, so only the timestamp itself is wrong.
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=timestamp, body=body)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp.encode("latin-1"),  # as HTTP carries it
        "X-Slack-Signature": signature,
    }
    response = slack_client.http.post(
        f"{slack_client.bot.url}/slack/events", content=body, headers=headers
    )
    assert response.status_code == 401
    assert_never_answered(slack_client, response_url)
