"""One health-monitor pass over many links, timed, against a slow Salesforce.

Run from a checkout, with its venv:

    .venv/bin/python -m tests.benchmarks.monitor_pass --links 10000 --delay 0.2
        [--database-url URL] [--json FILE]

The replica is composed as `vcc-bot serve` composes it (`bot.cli.build` from Settings),
on a throwaway SQLite file or on the given database, which must hold no linked account
(the pass would check them against the fake). N linked accounts are bulk-inserted, five
per API user, each with its own refresh token. The fake Salesforce answers every call
after `--delay` seconds; it runs in a child process, so its request threads neither take
the replica's GIL nor count in its memory. It counts the requests under way at once.

Printed (and returned by `run`, for other runners): links, seconds, checks/s, the most
Salesforce requests under way at once, the replica's peak RSS during the pass, and how
late the replica's event loop ran a 10 ms timer during the pass (what an ack would wait).

The helpers here (ScaleSalesforce, grant_links, seed_links, replica_settings) are shared
with tests/test_monitor_scale.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

from cryptography.fernet import Fernet
from sqlalchemy import delete, func, insert
from sqlmodel import Session, col, select

from bot.cli import Runtime, build
from bot.config import Settings, load_settings
from bot.crypto import TokenCipher
from bot.domain import Environment, Health, LinkStatus
from bot.monitor import MONITOR_CONCURRENCY
from bot.standins._server import _Handler
from bot.standins.salesforce import DEFAULT_SCOPE, _Grant
from storage.db import Database
from storage.models import AuditEvent, VccAccount, utcnow
from tests.fakes import FakeSalesforce, Recorded, Reply, SfUser
from tests.support.constants import (
    ADMIN,
    BOT_TOKEN,
    CHANNEL,
    CLIENT_ID,
    CLIENT_SECRET,
    SIGNING_SECRET,
    TEAM,
)

ORG = "00D00000000BENCHAA"
LINKS_PER_USER = 5  # the bot's limit per API user, and the fake's approvals per user
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing here is ever called
PROBE_PERIOD = 0.01  # seconds between two ticks of the event-loop probe
IDLE_SECONDS = 2.0  # the probe's baseline, before the pass
ROOT = Path(__file__).resolve().parents[2]
LISTEN_BACKLOG = 128


# ---- the fake Salesforce, for many links -------------------------------------------------


class _PromptHandler(_Handler):
    # The base handler writes an answer's headers and body in two sends: with Nagle's
    # algorithm on, the body waits for the client's delayed ACK (40 ms on Linux), which
    # would make a 200 ms Salesforce answer in 240.
    disable_nagle_algorithm = True


class ScaleSalesforce(FakeSalesforce):
    """FakeSalesforce with many grants, and a count of the requests under way at once.

    Test additions, not claims about Salesforce: grants are found by token in a dict (the
    base class scans a list, which at 10,000 grants would time the fake, not the bot);
    answers are sent as soon as they are ready and the listen backlog takes a burst of
    new connections (the base's 5 makes the 6th connect wait a second for a SYN retry);
    `max_in_flight` is the most requests the fake was answering at once, from arrival to
    answer, its `delay` included.
    """

    def start(self) -> Self:
        super().start()
        assert self._httpd is not None
        self._httpd.RequestHandlerClass = _PromptHandler
        self._httpd.socket.listen(LISTEN_BACKLOG)
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._by_token: dict[str, _Grant] = {}
        self._count_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def grant(self, user: SfUser, refresh_token: str) -> None:
        """An approval of the connected app by `user`, as a completed login leaves it."""
        with self._lock:
            grant = _Grant(user, DEFAULT_SCOPE, refresh_token)
            self._grants.append(grant)
            self._by_token[refresh_token] = grant

    def _find_grant(self, refresh_token: str) -> _Grant | None:
        grant = self._by_token.get(refresh_token)
        if grant is not None and grant.refresh_token == refresh_token:
            return grant
        return super()._find_grant(refresh_token)  # rotated or revoked: the base's answer

    def _kill(self, grant: _Grant) -> None:
        self._by_token.pop(grant.refresh_token, None)
        super()._kill(grant)

    def _respond(self, req: Recorded) -> Reply:
        with self._count_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return super()._respond(req)
        finally:
            with self._count_lock:
                self.in_flight -= 1

    def reset_counts(self) -> None:
        with self._count_lock:
            self.max_in_flight = self.in_flight

    def refreshes(self) -> Counter[str]:
        """How many times each refresh token was refreshed."""
        with self._lock:
            return Counter(
                r.form.get("refresh_token", "")
                for r in self.requests
                if r.path == "/services/oauth2/token"
                and r.form.get("grant_type") == "refresh_token"
            )


def api_user_id(n: int) -> str:
    return f"005{n:012d}AAA"


def refresh_token(i: int) -> str:
    return f"5Aep861.bench.{i:08d}"


def account_id(i: int) -> str:
    return f"acct-{i:06d}"


def grant_links(fake: ScaleSalesforce, links: int) -> list[SfUser]:
    """Salesforce's side of `links` links: five per API user, each its own approval."""
    users = [
        fake.add_user(ORG, api_user_id(n), f"vcc-api-{n}@bench.example")
        for n in range(math.ceil(links / LINKS_PER_USER))
    ]
    for i in range(links):
        fake.grant(users[i // LINKS_PER_USER], refresh_token(i))
    return users


def seed_links(
    db: Database,
    cipher: TokenCipher,
    salesforce_url: str,
    links: int,
    *,
    team: str = TEAM,
    chunk: int = 1000,
) -> None:
    """The bot's side of the links of `grant_links`: Linked, healthy, due now.

    Inserted in bulk (one INSERT per chunk), as an import would; linking each through the
    login flow would take minutes at 10,000.
    """
    now = utcnow()
    before = now - timedelta(hours=2)
    table = VccAccount.__table__  # type: ignore[attr-defined]
    for start in range(0, links, chunk):
        rows = [
            {
                "team_id": team,
                "account_id": account_id(i),
                "status": LinkStatus.LINKED.value,
                "api_user_slot": i % LINKS_PER_USER + 1,
                "refresh_token_encrypted": cipher.encrypt(refresh_token(i)),
                "environment": Environment.PRODUCTION.value,
                "instance_url": salesforce_url,
                "identity_url": f"{salesforce_url}/id/{ORG}/{api_user_id(i // LINKS_PER_USER)}",
                "org_id": ORG,
                "sf_user_id": api_user_id(i // LINKS_PER_USER),
                "sf_username": f"vcc-api-{i // LINKS_PER_USER}@bench.example",
                "linked_by": ADMIN,
                "notify_channel": CHANNEL,
                "linked_at": before,
                "health": Health.HEALTHY.value,
                "health_checked_at": before,
                "next_check_at": None,
                "updated_at": before,
            }
            for i in range(start, min(links, start + chunk))
        ]

        def add(session: Session, rows: list[dict[str, Any]] = rows) -> None:
            session.execute(insert(table), rows)

        db.call(add)


def replica_settings(
    database_url: str,
    salesforce_url: str,
    encryption_key: str,
    *,
    slack_api_url: str = f"{NOWHERE}/api/",
    interval: int = 3600,
) -> Settings:
    """One replica's settings; replicas of one deployment share the database and key."""
    return load_settings(
        _env_file=None,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack_api_url,
        salesforce_client_id=CLIENT_ID,
        salesforce_client_secret=CLIENT_SECRET,
        salesforce_production_url=salesforce_url,
        salesforce_sandbox_url=salesforce_url,
        public_url=NOWHERE,
        database_url=database_url,
        vcc_encryption_key=encryption_key,
        host="127.0.0.1",
        vcc_health_interval=interval,
    )


# ---- the fake in a child process ---------------------------------------------------------


def serve_fake(links: int, delay: float) -> None:
    """The child: serve a seeded fake, its URL the first line out; then answer each line
    in ("reset", "stats") with a JSON line, until "stop" or the end of input."""
    fake = ScaleSalesforce(CLIENT_ID, CLIENT_SECRET, name="production")
    fake.delay = delay
    with fake:
        grant_links(fake, links)
        print(fake.url, flush=True)
        for line in sys.stdin:
            order = line.strip()
            if order == "stop":
                break
            if order == "reset":
                fake.reset_counts()
                print("{}", flush=True)
                continue
            refreshed = fake.refreshes()
            stats = {
                "requests": len(fake.requests),
                "max_in_flight": fake.max_in_flight,
                "refreshed": len(refreshed),
                "refreshed_more_than_once": sum(1 for n in refreshed.values() if n > 1),
                "errors": len(fake.errors),
            }
            print(json.dumps(stats), flush=True)


class FakeInChild:
    """The fake Salesforce in a child process (`-m tests.benchmarks.monitor_pass --serve-fake`)."""

    def __init__(self, links: int, delay: float) -> None:
        command = [sys.executable, "-m", "tests.benchmarks.monitor_pass", "--serve-fake"]
        command += ["--links", str(links), "--delay", str(delay)]
        self._proc = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.url = self._answer("start")

    def _answer(self, order: str) -> str:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        if order != "start":
            self._proc.stdin.write(order + "\n")
            self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake Salesforce exited ({self._proc.wait()}) on {order!r}")
        return line.strip()

    def reset(self) -> None:
        self._answer("reset")

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = json.loads(self._answer("stats"))
        return stats

    def close(self) -> None:
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            self._proc.stdin.write("stop\n")
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)


# ---- measuring ---------------------------------------------------------------------------


def _vm_kib(field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Start VmHWM afresh (Linux: 5 into clear_refs), so the peak is the pass's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _probe(lags: list[float]) -> None:
    """How late the loop wakes a timer: an ack waits as long for its turn."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(PROBE_PERIOD)
        lags.append(loop.time() - start - PROBE_PERIOD)


class _Collections:
    """The garbage collector's full collections and its longest pause, while installed."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._started)
        self.full += info["generation"] == 2


@dataclass
class _Pass:
    checked: int
    seconds: float
    idle_lags: list[float]  # the loop before the pass, with nothing to do
    lags: list[float]  # the loop during the pass
    collections: _Collections


async def _one_pass(runtime: Runtime) -> _Pass:
    idle: list[float] = []
    probe = asyncio.create_task(_probe(idle))
    await asyncio.sleep(IDLE_SECONDS)
    probe.cancel()
    lags: list[float] = []
    probe = asyncio.create_task(_probe(lags))
    collections = _Collections()
    gc.callbacks.append(collections)
    started = time.perf_counter()
    try:
        checked = await runtime.monitor.run_once()
        return _Pass(checked, time.perf_counter() - started, idle, lags, collections)
    finally:
        gc.callbacks.remove(collections)
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        await runtime.aclose()


def _ms(lags: list[float], share: float) -> float | None:
    if not lags:
        return None
    ordered = sorted(lags)
    return round(ordered[int(share * (len(ordered) - 1))] * 1000, 2)


def _health_counts(db: Database, team: str) -> dict[str, int]:
    def count(session: Session) -> dict[str, int]:
        rows = session.exec(
            select(VccAccount.health, func.count())
            .where(VccAccount.team_id == team)
            .group_by(VccAccount.health)
        ).all()
        return {str(health): int(n) for health, n in rows}

    return db.call(count, write=False)


def _refuse_linked(db: Database) -> None:
    def linked(session: Session) -> int:
        return int(
            session.exec(
                select(func.count())
                .select_from(VccAccount)
                .where(VccAccount.status == LinkStatus.LINKED)
            ).one()
        )

    if db.call(linked, write=False):
        raise RuntimeError(
            "the database already holds linked accounts: the pass would check them against "
            "the fake Salesforce and find them broken. Give an empty database."
        )


def _forget(db: Database, team: str) -> None:
    def remove(session: Session) -> None:
        session.exec(delete(AuditEvent).where(col(AuditEvent.team_id) == team))
        session.exec(delete(VccAccount).where(col(VccAccount.team_id) == team))

    db.call(remove)


def run(links: int, delay: float, database_url: str | None = None) -> dict[str, Any]:
    """Seed `links` links, run one monitor pass with Salesforce taking `delay` s a call.

    Synchronous (it runs its own event loop). A given database is migrated and must hold
    no linked account; the rows the run adds are deleted at its end.
    """
    team = "TBENCHMON"
    with contextlib.ExitStack() as stack:
        if database_url is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="vcc-monitor-"))
            database_url = f"sqlite:///{tmp}/vcc.db"
        fake = FakeInChild(links, delay)
        stack.callback(fake.close)
        runtime = build(replica_settings(database_url, fake.url, Fernet.generate_key().decode()))
        stack.callback(runtime.db.dispose)
        _refuse_linked(runtime.db)
        stack.callback(_forget, runtime.db, team)
        seeded = time.perf_counter()
        seed_links(runtime.db, runtime.cipher, fake.url, links, team=team)
        seed_seconds = time.perf_counter() - seeded
        rss_before = _vm_kib("VmRSS") or 0
        reset = _reset_peak_rss()
        fake.reset()
        load_before = os.getloadavg()[0]
        measured = asyncio.run(_one_pass(runtime))
        load_after = os.getloadavg()[0]
        peak = _vm_kib("VmHWM") if reset else None
        if peak is None:  # ru_maxrss: KiB on Linux, the process's peak since it started
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sf = fake.stats()
        health = _health_counts(runtime.db, team)
    checked, seconds = measured.checked, measured.seconds
    return {
        "links": links,
        "delay_s": delay,
        "database": database_url.split(":", 1)[0],
        "checked": checked,
        "seconds": round(seconds, 2),
        "checks_per_s": round(checked / seconds, 1) if seconds else None,
        "monitor_concurrency": MONITOR_CONCURRENCY,
        "max_concurrent_salesforce_requests": sf["max_in_flight"],
        "salesforce_requests": sf["requests"],
        "links_refreshed": sf["refreshed"],
        "links_refreshed_twice": sf["refreshed_more_than_once"],
        "health_after": health,
        "peak_rss_mb": round(peak / 1024, 1),
        "rss_before_pass_mb": round(rss_before / 1024, 1),
        "loop_lag_idle_p50_ms": _ms(measured.idle_lags, 0.5),
        "loop_lag_idle_p99_ms": _ms(measured.idle_lags, 0.99),
        "loop_lag_p50_ms": _ms(measured.lags, 0.5),
        "loop_lag_p99_ms": _ms(measured.lags, 0.99),
        "loop_lag_max_ms": _ms(measured.lags, 1.0),
        "gc_full_collections": measured.collections.full,
        "gc_longest_pause_ms": round(measured.collections.longest * 1000, 1),
        # The machine's other work shows in every figure above: a 1-minute load average
        # above the core count means the pass waited for CPU.
        "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
        "cpus": os.cpu_count(),
        "seed_seconds": round(seed_seconds, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--links", type=int, default=10_000)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per Salesforce call")
    parser.add_argument("--database-url", default=None, help="default: a throwaway SQLite file")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fake:
        serve_fake(args.links, args.delay)
        return 0
    result = run(args.links, args.delay, args.database_url)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    complete = result["checked"] == args.links and not result["links_refreshed_twice"]
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
