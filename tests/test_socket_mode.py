"""`vcc-bot serve --socket-mode`: Slack over a WebSocket, the browser flow over local HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from bot import ids
from tests.fakes.socket_mode import FakeSocketModeGateway
from tests.support import (
    ADMIN,
    BOT_TOKEN,
    CHANNEL,
    CLIENT_ID,
    CLIENT_SECRET,
    SIGNING_SECRET,
    TEAM,
    buttons,
    command_fields,
    text_of,
    through_salesforce,
    wait_until,
)


@pytest.fixture
def gateway(slack):
    with FakeSocketModeGateway() as fake:
        slack.socket_mode_url = fake.url
        yield fake


def click_payload(slack, action_id: str, value: str) -> dict:
    return {
        "type": "block_actions",
        "user": {"id": ADMIN, "username": "ada", "team_id": TEAM},
        "api_app_id": "A0VCC",
        "container": {"type": "message", "channel_id": CHANNEL, "is_ephemeral": True},
        "team": {"id": TEAM, "domain": "acme"},
        "channel": {"id": CHANNEL, "name": "vcc-admins"},
        "response_url": slack.new_response_url(command=True),
        "actions": [{"action_id": action_id, "value": value, "type": "button", "block_id": "b"}],
    }


def test_the_whole_link_flow_over_socket_mode(tmp_path, slack, salesforce, gateway, public_port):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "SALESFORCE_CLIENT_ID": CLIENT_ID,
        "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET,
        "SALESFORCE_PRODUCTION_URL": salesforce.production.url,
        "SALESFORCE_SANDBOX_URL": salesforce.sandbox.url,
        "PUBLIC_URL": f"http://127.0.0.1:{public_port}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'vcc.db'}",
        "VCC_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "HOST": "127.0.0.1",
        "PORT": str(public_port),
    }
    vcc_bot = Path(sys.executable).parent / "vcc-bot"
    log = (tmp_path / "bot.log").open("w+")
    proc = subprocess.Popen(
        [str(vcc_bot), "serve", "--socket-mode"], env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    try:
        gateway.wait(lambda: gateway.connections >= 1, timeout=30)
        wait_until(lambda: _healthy(public_port), 20, "the HTTP server")

        command = command_fields(slack, "link acme")
        envelope = gateway.send("slash_commands", command)
        gateway.wait(lambda: envelope in gateway.acks)
        prompt = slack.wait_for(lambda: slack.responses(command["response_url"]))[0]
        assert ids.LINK_PRODUCTION in buttons(prompt)

        click = click_payload(slack, ids.LINK_PRODUCTION, "acme")
        clicked = gateway.send("interactive", click)
        gateway.wait(lambda: clicked in gateway.acks)
        dm = slack.wait_for(lambda: slack.dms_to(ADMIN))[0]
        login_url = buttons(dm)[ids.LOGIN_OPEN]["url"]
        assert login_url.startswith(f"http://127.0.0.1:{public_port}/salesforce/login/")

        with httpx.Client(timeout=10) as browser:
            page = through_salesforce(browser, login_url)
        assert page.status_code == 200, page.text
        notice = slack.wait_for(lambda: slack.messages_to(CHANNEL))
        assert "acme" in text_of(notice[0])
        # In Socket Mode there is no HTTP endpoint for Slack at all.
        assert httpx.post(f"http://127.0.0.1:{public_port}/slack/events").status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.seek(0)
        output = log.read()
        log.close()
    assert CLIENT_SECRET not in output and slack.app_token not in output


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False  # still starting
