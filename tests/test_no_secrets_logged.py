"""Tokens, codes, states and secrets never reach the logs, whatever the bot does."""

from __future__ import annotations

import logging

from bot import ids
from tests.support import (
    BOT_TOKEN,
    CLIENT_SECRET,
    SIGNING_SECRET,
    SlackClient,
    start_link,
    text_of,
    through_salesforce,
)

# Not the bot's logs: the test's own Slack client and browser use httpx, which logs every
# URL it requests (the bot uses httpx2, logged as "httpx2"); and uvicorn's access log, which
# the bot turns off (access_log=False leaves it without handlers or propagation) but pytest
# captures anyway, since it attaches its handler to every non-propagating logger.
# test_cli.py checks that a real `vcc-bot serve` writes neither.
NOT_THE_BOTS = {"httpx", "httpcore", "uvicorn.access"}


def from_the_bot(record: logging.LogRecord) -> bool:
    return not {record.name, record.name.split(".")[0]} & NOT_THE_BOTS


def secrets_salesforce_saw(fake) -> dict[str, list[str]]:
    """Every secret the bot sent to (fake) Salesforce, by kind."""
    seen: dict[str, list[str]] = {}
    for request in fake.requests:
        for kind in ("code", "code_verifier", "refresh_token", "token"):
            if request.form.get(kind):
                seen.setdefault(kind, []).append(request.form[kind])
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            seen.setdefault("access_token", []).append(token)
    for authorize in fake.authorize_requests:
        seen.setdefault("state", []).append(authorize["state"])
        seen.setdefault("code_challenge", []).append(authorize["code_challenge"])
    return seen


def test_a_whole_link_status_and_unlink_log_no_secret(
    caplog, slack_client, browser, bot, salesforce, slack, settings
):
    # Root first: each call also sets the capture handler's level, so the last one wins.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="vcc")

    start = start_link(slack_client, "acme")
    assert through_salesforce(browser, start.login_url).status_code == 200
    issued = salesforce.production.live_refresh_tokens(salesforce.api_user)
    issued += salesforce.production.live_access_tokens(salesforce.api_user)
    assert "the link works" in text_of(
        slack_client.replies(slack_client.command("status acme"))[-1]
    )
    forger = SlackClient(bot, slack, secret="wrong")
    try:
        assert forger.post("command=%2Fvcc&text=status+acme").status_code == 401
    finally:
        forger.http.close()
    slack_client.replies(slack_client.command("unlink acme"))
    unlinked = slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, "acme"))[0]
    assert "now *Unlinked*" in text_of(unlinked)

    seen = secrets_salesforce_saw(salesforce.production)
    kinds = {"code", "code_verifier", "refresh_token", "token", "access_token", "state"}
    assert kinds <= set(seen)  # the flow really sent each kind of secret
    secrets = {
        "client secret": CLIENT_SECRET,
        "signing secret": SIGNING_SECRET,
        "bot token": BOT_TOKEN,
        "login link token": start.login_url.rsplit("/", 1)[-1],
        "browser cookie": browser.cookies["vcc_browser"],
        **{f"encryption key {i}": key for i, key in enumerate(settings.encryption_keys)},
        **{f"issued token {i}": token for i, token in enumerate(issued)},
        **{f"{kind} {i}": v for kind, values in seen.items() for i, v in enumerate(values)},
    }
    records = [r for r in caplog.records if from_the_bot(r)]
    assert any(r.levelno == logging.DEBUG for r in records)  # debug logs were captured too
    formatter = logging.Formatter()  # the message with any traceback
    logged = [formatter.format(r) for r in records]
    for what, secret in secrets.items():
        assert [line for line in logged if secret in line] == [], f"the {what} was logged"

    callbacks = [
        r.getMessage()
        for r in records
        if r.name == "vcc.access" and "/salesforce/callback" in r.getMessage()
    ]
    assert callbacks, "the callback was not access-logged"
    assert not [m for m in callbacks if "?" in m]
