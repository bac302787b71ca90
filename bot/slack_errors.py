"""What Slack said when it refused a call."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError


def slack_error(exc: SlackApiError) -> str:
    """The `error` code of Slack's answer. An answer that is not JSON (an HTML or plain-text
    5xx page from a proxy in front of Slack) carries none, and slack_sdk hands it over as
    an empty dict, a string or aiohttp's response: name its HTTP status instead."""
    response = exc.response  # a SlackResponse; aiohttp's own response for a bad JSON body
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return f"http_{status}" if status else "unknown_error"
