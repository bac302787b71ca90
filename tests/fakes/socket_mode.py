"""A loopback Socket Mode gateway: Slack's WebSocket end, as slack_sdk's client expects it.

`apps.connections.open` (answered by FakeSlack) hands out this gateway's URL. On connect
the gateway says hello, then sends the envelopes a test queues and records the acks.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

from aiohttp import WSMsgType, web


class FakeSocketModeGateway:
    def __init__(self) -> None:
        self.acks: dict[str, dict[str, Any]] = {}
        self.connections = 0
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._outbox: asyncio.Queue[dict[str, Any]] | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    def start(self) -> FakeSocketModeGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._outbox = asyncio.Queue()
        app = web.Application()
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/link"

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        with self._cond:
            self.connections += 1
            self._cond.notify_all()
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "fake-gateway", "approximate_connection_time": 3600},
                "connection_info": {"app_id": "A0VCC"},
            }
        )
        assert self._outbox is not None
        sender = asyncio.create_task(self._send_queued(ws))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    data = json.loads(message.data)
                    with self._cond:
                        self.acks[data.get("envelope_id", "")] = data
                        self._cond.notify_all()
        finally:
            sender.cancel()
        return ws

    async def _send_queued(self, ws: web.WebSocketResponse) -> None:
        assert self._outbox is not None
        while True:
            envelope = await self._outbox.get()
            await ws.send_json(envelope)

    def send(self, kind: str, payload: dict[str, Any]) -> str:
        """Queue an envelope (kind: slash_commands, interactive, events_api); returns its id."""
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "payload": payload,
        }
        assert self._outbox is not None
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, envelope)
        return envelope_id

    def wait(self, predicate: Any, timeout: float = 10.0) -> Any:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError("the Socket Mode gateway did not see what was expected")
            return predicate()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FakeSocketModeGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
