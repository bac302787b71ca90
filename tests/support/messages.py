"""Reading the messages the bot posts: their visible text and their buttons."""

from __future__ import annotations

from typing import Any


def text_of(message: dict[str, Any]) -> str:
    """All visible text in a message: its text and every text field of its blocks.

    Zero-width spaces (the bot's escape of mrkdwn formatting in outside values) are
    invisible, so they are dropped; `raw_text_of` keeps them.
    """
    return raw_text_of(message).replace("\u200b", "")


def raw_text_of(message: dict[str, Any]) -> str:
    """The message's text fields exactly as posted."""
    parts = [message.get("text") or ""]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    parts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("blocks") or [])
    return "\n".join(parts)


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's buttons by action_id."""
    found = {}
    for block in message.get("blocks") or []:
        for element in [*(block.get("elements") or []), block.get("accessory") or {}]:
            if element.get("type") == "button":
                found[element["action_id"]] = element
    return found
