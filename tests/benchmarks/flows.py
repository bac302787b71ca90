"""Complete link flows, many at once, as admins perform them (tests/support/flow.py's steps).

One flow: the signed `/vcc link <account>`, the signed click on Production, the login link
read from the DM, its page opened and its button POSTed from the bot's origin, the fake
Salesforce's authorize redirect followed, and the callback. It counts once the callback's
page says the account is linked (the link is stored and `complete` has sent its notices)
and both notices have reached the fake Slack: the "linked" DM and the channel notice.

Each concurrent worker is its own admin in its own channel, so the DMs and notices it waits
for are its own; every flow links a new account, and (BenchSalesforce) every login is the
API user of a new org, as a real rollout across many orgs would be.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from bot import ids
from tests.benchmarks.harness import (
    BOT_TOKEN,
    Fakes,
    buttons,
    click_body,
    command_body,
    signed_headers,
)
from tests.fakes import SfUser


@dataclass
class FlowStats:
    workers: int
    completed: int
    failed: int
    seconds: float
    per_second: float
    p50_s: float
    p99_s: float
    failures: dict[str, int] = field(default_factory=dict)
    step_ms: dict[str, float] = field(default_factory=dict)  # mean time of each step


def _path(url: str) -> str:
    return urlsplit(url).path


class FlowDriver:
    """Runs link flows against one bot; `prefix` keeps account names apart between runs."""

    def __init__(self, fakes: Fakes, bot_url: str, prefix: str) -> None:
        self.fakes = fakes
        self.bot_url = bot_url
        self.prefix = prefix
        self._seen: Counter[str] = Counter()  # messages already consumed, per channel
        self.in_callback = 0  # browsers waiting for the callback's answer now
        self._steps: defaultdict[str, list[float]] = defaultdict(list)
        # One pool for Slack's requests, one transport for every browser: each browser
        # still gets a cookie jar of its own, without the cost of a new client's TLS setup.
        self._slack = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200))
        self._transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=200))

    async def aclose(self) -> None:
        await self._slack.aclose()
        await self._transport.aclose()

    def admins(self, workers: int) -> list[tuple[str, str]]:
        """Admin user and notice channel per worker; their DM channels opened at the fake."""
        slack = self.fakes.slack
        pairs = []
        for worker in range(workers):
            user = f"UB{self.prefix.upper()}{worker:04d}"
            slack.add_user(user, is_admin=True, name=f"admin{worker}")
            with httpx.Client(timeout=10) as http:
                http.post(
                    f"{slack.api_url}conversations.open",
                    data={"users": user},
                    headers={"Authorization": f"Bearer {BOT_TOKEN}"},
                ).raise_for_status()
            pairs.append((user, f"CB{self.prefix.upper()}{worker:04d}"))
            self._resync(*pairs[-1])  # what earlier runs left there is not this run's
        return pairs

    async def _slack_post(self, body: str) -> None:
        response = await self._slack.post(
            f"{self.bot_url}/slack/events", content=body, headers=signed_headers(body)
        )
        if response.status_code != 200:
            raise RuntimeError(f"/slack/events answered {response.status_code}")

    async def _next(self, key: str) -> dict[str, object]:
        self._seen[key] += 1
        return (await self.fakes.slack.wait_delivered(key, self._seen[key]))[-1]

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self._steps[name].append(time.perf_counter() - began)

    async def one(self, user: str, channel: str, account: str) -> None:
        """One complete flow; raises on any step that does not go as it should."""
        slack = self.fakes.slack
        dm = slack.im_channel(user)
        assert dm is not None
        command_url = slack.new_response_url(command=True)
        body = command_body(f"link {account}", command_url, user=user, channel=channel)
        with self._step("command: ack"):
            await self._slack_post(body)
        with self._step("command: prompt posted"):
            prompt = (await slack.wait_delivered(_path(command_url), 1))[0]
        value = buttons(prompt)[ids.LINK_PRODUCTION]["value"]
        ts = f"{time.time():.6f}"  # each prompt is a message of its own
        click = click_body(
            ids.LINK_PRODUCTION,
            value,
            slack.new_response_url(),
            user=user,
            channel=channel,
            message_ts=ts,
        )
        with self._step("click: ack"):
            await self._slack_post(click)
        with self._step("click: login link DM'd"):
            login_url = buttons(await self._next(dm))[ids.LOGIN_OPEN]["url"]
        browser = httpx.AsyncClient(transport=self._transport, timeout=60)
        with self._step("browser: login page"):
            page = await browser.get(login_url)
        if page.status_code != 200:
            raise RuntimeError(f"login page {page.status_code}")
        # The page's button: a POST from the page's own origin; the bot sends the browser
        # to Salesforce (303), which sends it back to the callback (302).
        with self._step("browser: button, 303"):
            to_salesforce = await browser.post(login_url, headers={"Origin": self.bot_url})
        if to_salesforce.status_code != 303:
            raise RuntimeError(f"login button {to_salesforce.status_code}")
        with self._step("browser: Salesforce authorize"):
            back = await browser.get(to_salesforce.headers["location"])
        if back.status_code != 302:
            raise RuntimeError(f"Salesforce authorize {back.status_code}")
        self.in_callback += 1
        try:
            with self._step("browser: callback"):
                linked = await browser.get(back.headers["location"])
        finally:
            self.in_callback -= 1
        if linked.status_code != 200 or "Linked" not in linked.text:
            raise RuntimeError(f"callback {linked.status_code}")
        with self._step("notices: DM and channel"):
            await self._next(f"update:{dm}")  # the login DM, now saying "Linked"
            await self._next(channel)  # the notice in the account's channel

    async def run(
        self,
        workers: int,
        *,
        duration: float | None = None,
        stop: threading.Event | None = None,
        stagger: float = 0.0,
        flow_timeout: float = 60.0,
    ) -> FlowStats:
        """`workers` admins, each running flows back to back until `duration` has passed
        (flows under way then finish, and count) or until `stop` is set (flows under way
        are then abandoned: the bot finishes them on its own). Worker n starts after
        n * `stagger` seconds, so that long flows do not move in step."""
        pairs = await asyncio.to_thread(self.admins, workers)
        durations: list[float] = []
        failures: Counter[str] = Counter()
        started = time.perf_counter()
        end = started + duration if duration is not None else float("inf")

        async def worker(index: int, user: str, channel: str) -> None:
            await asyncio.sleep(index * stagger)
            n = 0
            while time.perf_counter() < end:
                n += 1
                began = time.perf_counter()
                try:
                    await asyncio.wait_for(
                        self.one(user, channel, f"{self.prefix}-{index}-{n}"), flow_timeout
                    )
                except Exception as exc:  # counted and shown; the next flow goes on
                    failures[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                    # A missing or late message would shift this worker's later counts.
                    await asyncio.sleep(1.0)
                    self._resync(user, channel)
                    continue
                durations.append(time.perf_counter() - began)

        tasks = [asyncio.create_task(worker(i, u, c)) for i, (u, c) in enumerate(pairs)]
        # `stop` is set from another thread: wait for it in one.
        watcher = asyncio.create_task(asyncio.to_thread(stop.wait)) if stop is not None else None
        await asyncio.wait(
            [*tasks, *([watcher] if watcher else [])], return_when=asyncio.FIRST_COMPLETED
        )
        if watcher is not None and watcher.done():
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if watcher is not None:
            watcher.cancel()
        elapsed = time.perf_counter() - started
        durations.sort()

        def pick(q: float) -> float:
            return round(durations[min(len(durations) - 1, int(q * len(durations)))], 3)

        return FlowStats(
            workers=workers,
            completed=len(durations),
            failed=sum(failures.values()),
            seconds=round(elapsed, 2),
            per_second=round(len(durations) / elapsed, 1),
            p50_s=pick(0.5) if durations else 0.0,
            p99_s=pick(0.99) if durations else 0.0,
            failures=dict(failures.most_common(5)),
            step_ms={k: round(1000 * sum(v) / len(v), 1) for k, v in self._steps.items()},
        )

    def _resync(self, user: str, channel: str) -> None:
        slack = self.fakes.slack
        dm = slack.im_channel(user) or ""
        for key in (dm, f"update:{dm}", channel):
            self._seen[key] = slack.delivered_count(key)


def link_one(fakes: Fakes, bot_url: str, account: str, user: SfUser | None = None) -> None:
    """Link `account` once (setup for the ack runs), as the same flow does."""
    if user is not None:
        fakes.production.login_as = user

    async def go() -> None:
        driver = FlowDriver(fakes, bot_url, prefix=f"setup{account}")
        try:
            (admin, channel), *_ = await asyncio.to_thread(driver.admins, 1)
            await driver.one(admin, channel, account)
        finally:
            await driver.aclose()

    asyncio.run(go())
