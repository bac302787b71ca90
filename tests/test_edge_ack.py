"""Commands, clicks and events are answered 200 at the HTTP edge, before bolt runs them;
beyond EDGE_ACKS requests in bolt's hands, requests go through bolt in line again.

Slack needs nothing but a 200 within 3 s for these (api.slack.com/interactivity/handling#
acknowledgment_response); bolt's own `ack()` would make the answer wait for bolt's
middleware and its 10 ms polling. To tell the two apart from the outside, the tests stop
bolt before any listener can run: until the bot knows who it is, bolt's authorization asks
Slack's `auth.test` for each request, and the fake Slack holds every `auth.test` at a gate.
An answer that arrives while the gate is closed can only have come from the edge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlencode

import httpx
import pytest

from bot import ids
from bot.standins import payloads
from bot.standins.payloads import FORM
from bot.web import EDGE_ACKS
from tests.fakes import FakeSlack, Gate, Recorded
from tests.support import (
    SIGNING_SECRET,
    RunningBot,
    SlackClient,
    bot_with,
    command_fields,
    text_of,
)


def is_auth_test(req: Recorded) -> bool:
    return req.path == "/api/auth.test"


@pytest.fixture
def gated(settings, slack: FakeSlack) -> Iterator[tuple[RunningBot, SlackClient, Gate]]:
    """The bot started while Slack holds every auth.test: bolt cannot authorize anything."""
    gate = slack.hold_every(is_auth_test)
    with bot_with(settings, slack) as (running, client):
        gate.wait_arrived(1, timeout=10)  # the start-up's own auth.test
        yield running, client, gate
        gate.release()


def signed(body: str, content_type: str = FORM) -> dict[str, str]:
    return payloads.signed_headers(SIGNING_SECRET, body, content_type)


def test_a_command_and_a_click_are_answered_before_bolt_has_run_them(gated, slack):
    # (Events take the same path; bolt authorizes no app_uninstalled or tokens_revoked,
    # the bot's only events, so the gate cannot show it for them.)
    running, client, gate = gated
    command = command_fields(slack, "status acme")
    click_body, click_url = client.click_body(ids.LINK_PRODUCTION, "acme")
    for body, kind in (
        (urlencode(command), "application/x-www-form-urlencoded"),
        (click_body, "application/x-www-form-urlencoded"),
    ):
        # Bolt waits at the gate: an answer in time can only be the edge's.
        answer = httpx.post(
            f"{running.url}/slack/events", content=body, headers=signed(body, kind), timeout=5
        )
        assert answer.status_code == 200 and answer.content == b""
    gate.wait_arrived(3, timeout=10)  # and bolt has both, at its authorization
    assert slack.responses(command["response_url"]) == []
    assert slack.responses(click_url) == []
    gate.release()
    # Behind the answer, bolt ran the listeners as usual.
    assert "acme" in text_of(client.replies(command["response_url"])[0])
    assert client.replies(click_url)


def test_beyond_edge_acks_in_bolts_hands_a_request_is_answered_in_line(gated, slack):
    running, client, gate = gated
    urls: list[str] = []

    async def many() -> list[int]:
        limits = httpx.Limits(max_connections=EDGE_ACKS + 8)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:

            async def one() -> int:
                fields = command_fields(slack, "status acme")
                urls.append(fields["response_url"])
                body = urlencode(fields)
                answer = await http.post(
                    f"{running.url}/slack/events", content=body, headers=signed(body)
                )
                return answer.status_code

            return await asyncio.gather(*(one() for _ in range(EDGE_ACKS)))

    # EDGE_ACKS requests are answered at once; all of them wait in bolt for auth.test
    # (at the gate, or for a connection to Slack: the bot's pool has fewer than that).
    assert asyncio.run(many()) == [200] * EDGE_ACKS
    gate.wait_arrived(2, timeout=10)
    # One more is handed to bolt in line: its answer waits for bolt, held at the gate.
    extra = command_fields(slack, "status acme")
    body = urlencode(extra)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            httpx.post,
            f"{running.url}/slack/events",
            content=body,
            headers=signed(body),
            timeout=30,
        )
        with pytest.raises(FutureTimeout):
            pending.result(timeout=1.0)  # the edge would have answered within milliseconds
        gate.release()
        answer = pending.result(timeout=30)
    assert answer.status_code == 200
    # Nothing was lost on either path: every request got its status reply.
    for url in [*urls, extra["response_url"]]:
        assert "acme" in text_of(client.replies(url, timeout=30)[0])
