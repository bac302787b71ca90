"""The floor for /vcc latency: the bot's server stack with a listener that only acks.

Same server and adapter as `vcc-bot serve` (uvicorn, Starlette, bolt's async handler).
Reads SLACK_SIGNING_SECRET, SLACK_BOT_TOKEN, SLACK_API_URL, HOST and PORT.
"""

from __future__ import annotations

import os

import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def create() -> Starlette:
    # A client on the fake Slack: bolt's auth.test on the first request, as for the bot.
    client = AsyncWebClient(
        token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]
    )
    bolt = AsyncApp(client=client, signing_secret=os.environ["SLACK_SIGNING_SECRET"])

    @bolt.command("/vcc")
    async def vcc(ack: AsyncAck) -> None:
        await ack()

    handler = AsyncSlackRequestHandler(bolt)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/slack/events", events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


if __name__ == "__main__":
    uvicorn.run(
        create(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ["PORT"]),
        access_log=False,
        log_level="warning",
        server_header=False,
    )
