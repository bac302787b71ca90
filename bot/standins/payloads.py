"""What Slack sends an app: slash commands, button clicks, events, signed as Slack signs.

Shapes from Slack's documentation: api.slack.com/interactivity/slash-commands#app_command_
handling (command fields), api.slack.com/reference/interaction-payloads/block-actions (a
click in a message carries `container.message_ts` and a `response_url`; a click in a view
carries the view and no `response_url`), api.slack.com/authentication/verifying-requests-
from-slack (the signature). The tests and `vcc-bot demo` build their requests here.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

FORM = "application/x-www-form-urlencoded"


def signed_headers(secret: str, body: str, content_type: str = FORM) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    assert signature is not None  # None only without a secret
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }


def command_fields(
    text: str,
    *,
    response_url: str,
    trigger_id: str,
    user: str,
    channel: str,
    team: str,
    enterprise: str | None = None,
    org_wide: bool = False,
) -> dict[str, str]:
    """What Slack sends for `/vcc <text>` (form fields over HTTP, JSON in Socket Mode)."""
    grid = {"enterprise_id": enterprise, "enterprise_name": "Org"} if enterprise else {}
    return {
        **grid,
        "token": "verification-token-unused",
        "team_id": team,
        "team_domain": "acme",
        "channel_id": channel,
        "channel_name": "vcc-admins",
        "user_id": user,
        "user_name": "someone",
        "command": "/vcc",
        "text": text,
        "api_app_id": "A0VCC",
        "is_enterprise_install": "true" if org_wide else "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def _action(action_id: str, value: str) -> dict[str, Any]:
    return {
        "action_id": action_id,
        "block_id": "blk",
        "text": {"type": "plain_text", "text": "button"},
        "value": value,
        "type": "button",
        "action_ts": f"{time.time():.6f}",
    }


def _clicker(user: str, team: str, enterprise: str | None, org_wide: bool) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "someone", "name": "someone", "team_id": team},
        "api_app_id": "A0VCC",
        "token": "verification-token-unused",
        "team": {"id": team, "domain": "acme"},
        "enterprise": {"id": enterprise, "name": "Org"} if enterprise else None,
        "is_enterprise_install": org_wide,
    }


def message_click(
    action_id: str,
    value: str,
    *,
    response_url: str,
    trigger_id: str,
    message_ts: str,
    user: str,
    channel: str,
    team: str,
    enterprise: str | None = None,
    org_wide: bool = False,
    ephemeral: bool = True,
) -> str:
    """The form body of a click on a button of a message."""
    payload = {
        **_clicker(user, team, enterprise, org_wide),
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": ephemeral,
        },
        "trigger_id": trigger_id,
        "channel": {"id": channel, "name": "vcc-admins"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [_action(action_id, value)],
    }
    return urlencode({"payload": json.dumps(payload)})


def view_click(
    view: dict[str, Any],
    action_id: str,
    value: str,
    *,
    trigger_id: str,
    user: str,
    team: str,
    enterprise: str | None = None,
    org_wide: bool = False,
) -> str:
    """The form body of a click on a button of a view (the Home tab): no response_url."""
    view_id = view.get("id", "V00000001")
    payload = {
        **_clicker(user, team, enterprise, org_wide),
        "container": {"type": "view", "view_id": view_id},
        "trigger_id": trigger_id,
        "view": {**view, "id": view_id, "team_id": team},
        "actions": [_action(action_id, value)],
    }
    return urlencode({"payload": json.dumps(payload)})
