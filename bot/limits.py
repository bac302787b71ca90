"""Refuses what the app should never read: unsigned Slack requests and oversized bodies.

Neither uvicorn nor bolt limits a request body, and the signature can only be checked
over the whole body, so without this a stranger's 256 MB POST is read into memory before
it is refused. A pure ASGI middleware: it answers from the headers alone, before any of
the body is received, and caps what the app can receive when no Content-Length is given.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 64 * 1024  # Slack's payloads are a few kilobytes; the browser's pages send none
MAX_UNSIGNED_BODY = 256  # room for Slack's `ssl_check=1&token=…`
_SIGNATURE_HEADERS = (b"x-slack-signature", b"x-slack-request-timestamp")


class BodyTooLarge(Exception):
    """The request body grew past the cap while the app was reading it."""


class RequestLimits:
    """Refuses, before reading a byte of its body, a request to one of `signed_paths` (where
    Slack's requests arrive) without Slack's signature headers (401), and one whose
    Content-Length exceeds `max_body` (413); a body without Content-Length (chunked) is cut
    off with 413 once it exceeds `max_body`.
    """

    def __init__(
        self, app: ASGIApp, *, max_body: int = MAX_BODY, signed_paths: Collection[str] = ()
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.signed_paths = frozenset(signed_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        length = content_length(headers.get(b"content-length"))
        cap = self.max_body
        if scope["path"] in self.signed_paths and not all(
            headers.get(name, b"").strip() for name in _SIGNATURE_HEADERS
        ):
            # Only Slack's ssl_check (a few bytes, unsigned by design) may come unsigned;
            # anything longer, or of unknown length, is refused unread.
            if length is None or length > MAX_UNSIGNED_BODY:
                await refuse(send, 401, "invalid request signature")
                return
            cap = MAX_UNSIGNED_BODY
        if length is not None and length > cap:
            await refuse(send, 413, "request body too large")
            return

        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLarge
            return message

        async def watch_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, watch_send)
        except BodyTooLarge:
            if started:  # too late to answer 413: let the server drop the connection
                raise
            await refuse(send, 413, "request body too large")


def content_length(value: bytes | None) -> int | None:
    """The declared length; None when absent or not a number (the server rejects those)."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


async def refuse(send: Send, status: int, error: str) -> None:
    """Answer and close the connection, so that the client's unread body is never read."""
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
