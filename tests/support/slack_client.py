"""Slack's side: the signed requests Slack sends the bot."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.standins import payloads
from tests.fakes import FakeSlack
from tests.support.constants import ADMIN, CHANNEL, SIGNING_SECRET, TEAM
from tests.support.running import RunningBot


def command_fields(
    fake: FakeSlack,
    text: str,
    *,
    user: str = ADMIN,
    channel: str = CHANNEL,
    team: str = TEAM,
    enterprise: str | None = None,
    org_wide: bool = False,
) -> dict[str, str]:
    """What Slack sends for `/vcc <text>` (form fields over HTTP, JSON in Socket Mode)."""
    return payloads.command_fields(
        text,
        response_url=fake.new_response_url(command=True),
        trigger_id=fake.issue_trigger(),
        user=user,
        channel=channel,
        team=team,
        enterprise=enterprise,
        org_wide=org_wide,
    )


# uvicorn closes a keep-alive connection after 5 idle seconds, httpx keeps one 5 seconds
# too: a request sent as the server closes it finds "Server disconnected". A client must let
# go of idle connections before the server does.
KEEPALIVE = httpx.Limits(keepalive_expiry=2.0)


def client(**options: Any) -> httpx.Client:
    """An HTTP client for the bot, as Slack's or a browser's."""
    return httpx.Client(timeout=10, limits=KEEPALIVE, **options)


@dataclass
class SlackClient:
    """Sends what Slack sends: slash commands and block actions, signed."""

    bot: RunningBot
    fake: FakeSlack
    secret: str = SIGNING_SECRET
    http: httpx.Client = field(default_factory=lambda: client())
    # The workspace this client speaks for: its team, and its Enterprise Grid org if any.
    team: str = TEAM
    enterprise: str | None = None
    org_wide: bool = False
    _messages: int = 0  # gives each clicked message its own ts

    def post(self, body: str, *, timestamp: int | None = None, sign: bool = True) -> httpx.Response:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sign:
            headers["X-Slack-Request-Timestamp"] = ts
            headers["X-Slack-Signature"] = SignatureVerifier(self.secret).generate_signature(
                timestamp=ts, body=body
            )
        return self.http.post(f"{self.bot.url}/slack/events", content=body, headers=headers)

    def command(
        self, text: str, *, user: str = ADMIN, channel: str = CHANNEL, team: str | None = None
    ) -> str:
        """Run `/vcc <text>`; returns the response_url the bot answers on."""
        fields = command_fields(
            self.fake,
            text,
            user=user,
            channel=channel,
            team=team or self.team,
            enterprise=self.enterprise,
            org_wide=self.org_wide,
        )
        response = self.post(urlencode(fields))
        assert response.status_code == 200, response.text
        return fields["response_url"]

    def click_body(
        self,
        action_id: str,
        value: str,
        *,
        user: str = ADMIN,
        channel: str = CHANNEL,
        team: str | None = None,
        message_ts: str | None = None,
    ) -> tuple[str, str]:
        """The form body Slack posts for a button click, and its response_url.

        Each click is on a message of its own (its own ts), as in Slack, where every
        prompt the bot posts is a new message.
        """
        response_url = self.fake.new_response_url()
        self._messages += 1
        body = payloads.message_click(
            action_id,
            value,
            response_url=response_url,
            trigger_id=self.fake.issue_trigger(),
            message_ts=message_ts or f"1700000000.{self._messages:06d}",
            user=user,
            channel=channel,
            team=team or self.team,
            enterprise=self.enterprise,
            org_wide=self.org_wide,
        )
        return body, response_url

    def click(
        self,
        action_id: str,
        value: str,
        *,
        user: str = ADMIN,
        channel: str = CHANNEL,
        team: str | None = None,
    ) -> str:
        """Click a button on an ephemeral message; returns its response_url."""
        body, response_url = self.click_body(
            action_id, value, user=user, channel=channel, team=team
        )
        response = self.post(body)
        assert response.status_code == 200, response.text
        return response_url

    def home_click(
        self, view: dict[str, Any], action_id: str, value: str, *, user: str = ADMIN
    ) -> httpx.Response:
        """Click a button on a published Home tab (`view`, as views.publish answered it).

        A click in a view carries the view and a `container` of type "view", and no
        response_url (api.slack.com/reference/interaction-payloads/block-actions).
        """
        body = payloads.view_click(
            view,
            action_id,
            value,
            trigger_id=self.fake.issue_trigger(),
            user=user,
            team=self.team,
            enterprise=self.enterprise,
            org_wide=self.org_wide,
        )
        return self.post(body)

    def submit_view(
        self,
        view: dict[str, Any],
        values: dict[str, dict[str, str]],
        *,
        user: str = ADMIN,
        team: str = TEAM,
    ) -> httpx.Response:
        """Submit a modal the bot opened; values[block_id][action_id] = typed text."""
        payload = {
            "type": "view_submission",
            "team": {"id": team, "domain": "acme"},
            "user": {"id": user, "username": "someone", "name": "someone", "team_id": team},
            "api_app_id": "A0VCC",
            "token": "verification-token-unused",
            "trigger_id": self.fake.issue_trigger(),
            "view": {
                **view,
                "id": "V00000001",
                "team_id": team,
                "state": {
                    "values": {
                        block: {
                            action: {"type": "plain_text_input", "value": text}
                            for action, text in actions.items()
                        }
                        for block, actions in values.items()
                    }
                },
                "hash": "1700000000.abcdef",
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }
        return self.post(urlencode({"payload": json.dumps(payload)}))

    def event(self, envelope: dict[str, Any]) -> httpx.Response:
        """Deliver an Events API body (JSON), signed, as Slack does."""
        body = json.dumps(envelope)
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": SignatureVerifier(self.secret).generate_signature(
                timestamp=ts, body=body
            ),
        }
        return self.http.post(f"{self.bot.url}/slack/events", content=body, headers=headers)

    def replies(self, response_url: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait until the bot has posted `count` replies to response_url; returns them all."""
        return self.fake.wait_for(
            lambda: (r := self.fake.responses(response_url)) and len(r) >= count and r,
            timeout,
        )


@contextmanager
def bot_with(
    settings: Any, fake: FakeSlack, **changes: Any
) -> Iterator[tuple[RunningBot, SlackClient]]:
    """The bot served with some settings changed, and a Slack client for it."""
    running = RunningBot(settings.model_copy(update=changes)).start()
    client = SlackClient(running, fake)
    try:
        yield running, client
    finally:
        client.http.close()
        running.stop()
