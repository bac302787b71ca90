"""The demo's Slack side: a page that plays Slack's client, and the app behind it.

The page shows a channel, the bot's direct messages and its Home tab, as the stand-in
Slack recorded them, and renders their Block Kit. What the person types or clicks is
sent to the bot as Slack sends it: signed slash commands and button clicks
(bot.standins.payloads), and app_home_opened events.

Slack itself keeps what the page needs beyond the stand-in's records: which ephemeral
answers belong after which command, and which message a click's response_url replaces
(api.slack.com/interactivity/handling#message_responses). That bookkeeping is here.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bot.standins import FakeSlack
from bot.standins.payloads import FORM, command_fields, message_click, signed_headers, view_click

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Answer:
    """A response_url the page handed out: for a command, or for a click on a message."""

    url: str
    replaces: str | None = None  # the id of the message a click's answer may replace
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Entry:
    """A line of the channel: what the person typed, and where its answers arrive."""

    id: str
    text: str
    posts_before: int  # channel posts made before it: the page orders by this
    answer: Answer
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class SlackSide:
    """The state of one person's Slack client in the demo."""

    slack: FakeSlack
    bot_url: str
    signing_secret: str
    team: str
    user: str
    channel: str
    entries: list[Entry] = field(default_factory=list)
    clicks: list[Answer] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def send(self, http: aiohttp.ClientSession, body: str, content_type: str = FORM) -> int:
        headers = signed_headers(self.signing_secret, body, content_type)
        url = f"{self.bot_url}/slack/events"
        async with http.post(url, data=body.encode(), headers=headers) as answer:
            return answer.status

    def command(self, text: str) -> tuple[str, str]:
        """A new channel line for `/vcc <text>`; returns its form body and its id."""
        url = self.slack.new_response_url(command=True)
        fields = command_fields(
            text,
            response_url=url,
            trigger_id=self.slack.issue_trigger(),
            user=self.user,
            channel=self.channel,
            team=self.team,
        )
        with self._lock:
            entry = Entry(
                f"c{next(self._ids)}",
                f"/vcc {text}".strip(),
                len(self.slack.messages_to(self.channel)),
                Answer(url),
            )
            self.entries.append(entry)
        return urlencode(fields), entry.id

    def click(self, message_id: str, channel: str, ts: str, action_id: str, value: str) -> str:
        """A click on a button of a message; its answers may replace that message."""
        url = self.slack.new_response_url()
        with self._lock:
            self.clicks.append(Answer(url, replaces=message_id))
        return message_click(
            action_id,
            value,
            response_url=url,
            trigger_id=self.slack.issue_trigger(),
            message_ts=ts,
            user=self.user,
            channel=channel,
            team=self.team,
            ephemeral=message_id.startswith("e"),
        )

    def home_click(self, action_id: str, value: str) -> str | None:
        view = self.slack.home_view(self.user)
        if view is None:
            return None
        return view_click(
            view,
            action_id,
            value,
            trigger_id=self.slack.issue_trigger(),
            user=self.user,
            team=self.team,
        )

    def home_opened(self) -> str:
        return json.dumps(self.slack.app_home_opened_event(self.team, self.user))

    # -- what the page shows -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            entries, clicks = list(self.entries), list(self.clicks)
        replaced: dict[str, dict[str, Any] | None] = {}
        extra: dict[str, list[dict[str, Any]]] = {}
        for answer in clicks:
            for n, post in enumerate(self.slack.responses(answer.url)):
                assert answer.replaces is not None
                if post.get("replace_original"):
                    replaced[answer.replaces] = post
                elif post.get("delete_original"):
                    replaced[answer.replaces] = None
                else:
                    ts = f"{answer.created}.{len(extra):04d}{n:02d}"
                    shown = {**post, "id": f"e{answer.url[-12:]}{n}", "ts": ts}
                    extra.setdefault(answer.replaces, []).append(shown)
        posts = self.slack.messages_to(self.channel)
        channel: list[dict[str, Any]] = []
        done = 0
        for entry in entries:
            for post in posts[done : entry.posts_before]:
                channel += _shown(post, replaced, extra)
            done = max(done, entry.posts_before)
            channel.append({"id": entry.id, "you": True, "text": entry.text})
            for n, post in enumerate(self.slack.responses(entry.answer.url)):
                # Each ephemeral message has a ts of its own in Slack (clicks on it name it).
                ts = f"{entry.created}.{entry.id[1:]:0>4}{n:02d}"
                message = {**post, "id": f"e{entry.id}-{n}", "ts": ts, "ephemeral": True}
                channel += _shown(message, replaced, extra)
        for post in posts[done:]:
            channel += _shown(post, replaced, extra)
        dms: list[dict[str, Any]] = []
        for post in self.slack.dms_to(self.user):
            dms += _shown(post, replaced, extra)
        return {
            "user": self.user,
            "channel": channel,
            "channel_id": self.channel,
            "dm_channel": self.slack.im_channel(self.user),
            "dms": dms,
            "home": self.slack.home_view(self.user),
        }


def _shown(
    message: dict[str, Any],
    replaced: dict[str, dict[str, Any] | None],
    extra: dict[str, list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """A message as the person sees it now, followed by the answers to clicks on it."""
    key = message.get("id") or f"m{message['channel']}-{message['ts']}"
    current = replaced.get(key, message) if key in replaced else message
    out = []
    if current is not None:
        out.append(
            {
                "id": key,
                "ts": message.get("ts", ""),
                "channel": message.get("channel", ""),
                "ephemeral": bool(message.get("ephemeral")) or key.startswith("e"),
                "text": current.get("text", ""),
                "blocks": current.get("blocks") or [],
            }
        )
    for answer in extra.get(key, []):
        out += _shown({**answer, "ephemeral": True}, replaced, extra)
    return out


def create_side_app(side: SlackSide) -> Starlette:
    sessions: list[aiohttp.ClientSession] = []  # one, opened with the app's event loop
    page = files("bot.demo").joinpath("page.html").read_text(encoding="utf-8")

    async def index(_: Request) -> Response:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    async def state(_: Request) -> Response:
        return JSONResponse(side.state())

    async def command(request: Request) -> Response:
        asked = await request.json()
        text = str(asked.get("text", "")).strip().removeprefix("/vcc").strip()
        body, entry = side.command(text)
        status = await side.send(sessions[0], body)
        return JSONResponse({"status": status, "entry": entry})

    async def click(request: Request) -> Response:
        asked = await request.json()
        if asked.get("surface") == "home":
            body = side.home_click(str(asked["action_id"]), str(asked.get("value", "")))
            if body is None:
                return JSONResponse({"error": "no Home tab yet"}, status_code=409)
        else:
            body = side.click(
                str(asked["message_id"]),
                str(asked["channel"]),
                str(asked.get("ts") or "1700000000.000001"),
                str(asked["action_id"]),
                str(asked.get("value", "")),
            )
        return JSONResponse({"status": await side.send(sessions[0], body)})

    async def home(_: Request) -> Response:
        status = await side.send(sessions[0], side.home_opened(), "application/json")
        return JSONResponse({"status": status})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            sessions.append(http)
            yield

    return Starlette(
        routes=[
            Route("/", index),
            Route("/state", state),
            Route("/command", command, methods=["POST"]),
            Route("/click", click, methods=["POST"]),
            Route("/home", home, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
