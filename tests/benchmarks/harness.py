"""What the benchmarks share: servers as child processes, the loopback fakes, Slack's requests.

Everything stays on 127.0.0.1. The fakes of bot/standins run in the benchmark's own process
(threads); the bot (`vcc-bot serve`, exactly as deployed) and the bare bolt app run as
child processes, so each has an interpreter of its own to be measured by.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bot.standins import payloads
from tests.fakes import FakeSalesforce, FakeSlack, Recorded, Reply, SfUser
from tests.support import database
from tests.support.waiting import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "bench-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-bench-token"
CLIENT_ID, CLIENT_SECRET = "3MVG9-bench-client-id", "bench-client-secret-0123456789"
TEAM, ADMIN, CHANNEL = "T0001", "UADMIN1", "C0NOTICE"
PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

__all__ = ["free_port"]


# ---- processes ---------------------------------------------------------------------------


def memory_kb(pid: int, field_name: str) -> int:
    """VmRSS, VmHWM, ... of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise KeyError(field_name)


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM, so that it reports the peak from now on rather than the process's."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """The highest VmRSS of a process, sampled in a thread every 10 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = memory_kb(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(OSError, KeyError):
                self.peak_kb = max(self.peak_kb, memory_kb(self.pid, "VmRSS"))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class Server:
    """A server in a child process; its memory peak is read just before it is stopped."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path
    started_s: float  # from spawning to the first 200 from /healthz
    started_cpu_s: float = 0.0  # the CPU it used meanwhile: what a busy machine cannot inflate
    peak_mb: float | None = None
    database_url: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        return memory_kb(self.pid, "VmRSS") / 1024

    def hwm_mb(self) -> float:
        return memory_kb(self.pid, "VmHWM") / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, KeyError):
                self.peak_mb = round(self.hwm_mb(), 1)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def problems(self) -> dict[str, int]:
        return logged_problems(self.log.read_text(errors="replace"))


def spawn(
    stack: contextlib.ExitStack,
    name: str,
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    port: int,
    timeout: float = 30.0,
) -> Server:
    """Start a server and wait until its /healthz answers 200; times that wait."""
    url = f"http://127.0.0.1:{port}"
    out = stack.enter_context(log.open("wb"))
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, proc, url, port, log, 0.0)
    stack.callback(server.stop)
    with httpx.Client(timeout=2) as http:
        while (elapsed := time.perf_counter() - started) < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{url}/healthz").status_code == 200:
                    server.started_s = time.perf_counter() - started
                    server.started_cpu_s = cpu_seconds(proc.pid)
                    return server
            time.sleep(0.01)  # the poll's resolution bounds the start-up figure's
    raise TimeoutError(f"{name} did not answer {url}/healthz within {elapsed:.0f} s")


def base_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}


def logged_problems(log: str) -> dict[str, int]:
    """A server's warnings and errors, by message and the line that ends its traceback."""
    counts: Counter[str] = Counter()
    for record in re.split(r"\n(?=\d{4}-\d\d-\d\d )", log):
        lines = record.strip().splitlines()
        if lines and re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL) ", lines[0]):
            tail = f" <- {lines[-1][:120]}" if len(lines) > 1 else ""
            counts[lines[0].split(" ", 2)[-1][:120] + tail] += 1
    return dict(counts.most_common(10))


# ---- the fakes ---------------------------------------------------------------------------


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class BenchSlack(FakeSlack):
    """The fake Slack, also filing each delivered message under its channel or response_url.

    Many flows run at once; each waits for its own message here (woken when it arrives)
    instead of polling and scanning every message the fake has kept.
    """

    def __init__(self) -> None:
        super().__init__(bot_token=BOT_TOKEN, team_id=TEAM)
        self.delivered: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._filed = threading.Lock()  # `delivered` and `_waiting`, across threads
        self._waiting: defaultdict[
            str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
        ] = defaultdict(list)
        self.after_answer = self._file

    def _file(self, req: Recorded, reply: Reply) -> None:
        key, message = None, None
        if reply.status == 200 and req.path == "/api/chat.postMessage":
            answer = json.loads(reply.body)
            if answer.get("ok"):
                key, message = answer["channel"], answer["message"]
        elif reply.status == 200 and req.path == "/api/chat.update":
            answer = json.loads(reply.body)
            if answer.get("ok"):  # a message told again (a login DM once the login ended)
                key, message = f"update:{answer['channel']}", answer["message"]
        elif reply.status == 200 and req.path.startswith("/response/"):
            key, message = req.path, req.json()
        if key is not None and message is not None:
            with self._filed:
                self.delivered[key].append(message)
                waiting = self._waiting.pop(key, [])
            for loop, future in waiting:
                loop.call_soon_threadsafe(_wake, future)

    async def wait_delivered(self, key: str, count: int, within: float = 30.0) -> list[Any]:
        """The first `count` messages of a channel (or a response_url's path), once there."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            with self._filed:
                got = self.delivered.get(key, [])
                if len(got) >= count:
                    return list(got)
                future: asyncio.Future[None] = loop.create_future()
                self._waiting[key].append((loop, future))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no message #{count} at {key} within {within} s")
            await asyncio.wait_for(future, remaining)

    def delivered_count(self, key: str) -> int:
        with self._filed:
            return len(self.delivered.get(key, []))

    def forget(self) -> None:
        """Drop what the fake recorded (kept lists grow with every request)."""
        super().forget()
        with self._filed:
            self.delivered.clear()


class BenchSalesforce(FakeSalesforce):
    """The fake Salesforce; with `new_user_per_login`, every login is a user of a new org.

    A real org allows five approvals per user and connected app and the bot five VCC
    accounts per API user; many links in a row are many orgs, each with its API user.
    """

    def __init__(self, name: str) -> None:
        super().__init__(CLIENT_ID, CLIENT_SECRET, name=name)
        self.new_user_per_login = False
        self._users_made = itertools.count(1)
        self.before_answer = self._login_as_new_user

    def _login_as_new_user(self, req: Recorded) -> None:
        # Under the fake's lock: the login this request makes is this user's, no other's.
        if self.new_user_per_login and req.path == "/services/oauth2/authorize":
            self.login_as = self.new_user()

    def new_user(self) -> SfUser:
        n = next(self._users_made)
        org = "00D1" if self.name == "production" else "00D2"
        return self.add_user(f"{org}{n:014d}", f"0051{n:014d}", f"api{n}@org{n}.example")


@dataclass
class Fakes:
    slack: BenchSlack = field(default_factory=BenchSlack)
    production: BenchSalesforce = field(default_factory=lambda: BenchSalesforce("production"))
    sandbox: BenchSalesforce = field(default_factory=lambda: BenchSalesforce("sandbox"))

    def start(self, stack: contextlib.ExitStack) -> Fakes:
        for fake in (self.slack, self.production, self.sandbox):
            stack.enter_context(fake)
        self.slack.add_user(ADMIN, is_admin=True, name="ada")
        self.production.login_as = self.production.add_user(
            "00D000000000001AAA", "005000000000001AAA", "api@acme.example"
        )
        return self

    def serving(self, bot_url: str) -> None:
        """Salesforce accepts only the connected app's callback: the bot's of this run."""
        for fake in (self.production, self.sandbox):
            fake.redirect_uri = f"{bot_url}/salesforce/callback"

    def activity(self) -> int:
        """Grows with every request that arrives at a fake and every answer it gives."""
        fakes = (self.slack, self.production, self.sandbox)
        return sum(len(f.requests) + f.answered for f in fakes)

    def settle(self, quiet: float, timeout: float = 300.0) -> float:
        """Wait until no fake has heard anything for `quiet` s: the bot's backlog has drained.

        Returns how long the bot went on working, in seconds.
        """
        start = changed = time.monotonic()
        last = -1
        while (now := time.monotonic()) - start < timeout:
            seen = self.activity()
            if seen != last:
                last, changed = seen, now
            elif now - changed >= quiet:
                return changed - start
            time.sleep(0.05)
        raise TimeoutError(f"the bot's background work did not drain within {timeout} s")

    def forget(self) -> None:
        for fake in (self.slack, self.production, self.sandbox):
            fake.forget()


# ---- the bot and the bare app ------------------------------------------------------------


def bot_env(fakes: Fakes, port: int, database_url: str, **extra: str) -> dict[str, str]:
    """`vcc-bot serve`'s environment against the loopback fakes; production defaults
    (VCC_CHECK_REUSE 30 s among them) unless `extra` says otherwise."""
    return {
        **base_env(),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fakes.slack.api_url,
        "SALESFORCE_CLIENT_ID": CLIENT_ID,
        "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET,
        "SALESFORCE_PRODUCTION_URL": fakes.production.url,
        "SALESFORCE_SANDBOX_URL": fakes.sandbox.url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": database_url,
        "VCC_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        # The monitor's passes are measured on their own (monitor_pass.py).
        "VCC_HEALTH_INTERVAL": "86400",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def bot_command() -> list[str]:
    vcc_bot = Path(sys.executable).parent / "vcc-bot"
    return [str(vcc_bot)] if vcc_bot.exists() else [sys.executable, "-m", "bot.cli"]


def serve_bot(
    stack: contextlib.ExitStack,
    fakes: Fakes,
    tmp: Path,
    *,
    database_url: str | None = None,
    name: str = "bot",
    **extra: str,
) -> Server:
    """`vcc-bot serve` in its own process, once it answers /healthz; a fresh SQLite file
    unless `database_url` names another database."""
    port = free_port()
    workdir = tmp / f"{name}-{port}"
    workdir.mkdir()
    url = database_url or f"sqlite:///{workdir / 'vcc.db'}"
    env = bot_env(fakes, port, url, **extra)
    # cwd: an empty directory, so no stray .env is read.
    cmd = [*bot_command(), "serve"]
    server = spawn(stack, name, cmd, env, workdir, workdir / "bot.log", port)
    server.database_url = url
    fakes.serving(server.url)
    return server


def serve_bare(stack: contextlib.ExitStack, fakes: Fakes, tmp: Path) -> Server:
    """The bare bolt app (bare_app.py): the same server and adapter, a /vcc that only acks."""
    port = free_port()
    env = base_env() | {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fakes.slack.api_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    cmd = [sys.executable, "-m", "tests.benchmarks.bare_app"]
    return spawn(stack, "bare bolt app", cmd, env, ROOT, tmp / "bare.log", port)


# ---- PostgreSQL --------------------------------------------------------------------------


def postgres_reachable(base: str = PG_URL) -> str | None:
    """None when PostgreSQL answers at `base`; else why not, for the table's note."""
    engine = create_engine(base, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means: not available here
        return f"PostgreSQL not reachable at {make_url(base).host}:{make_url(base).port} " + (
            f"({type(exc).__name__})"
        )
    finally:
        engine.dispose()
    return None


def fresh_postgres(base: str = PG_URL) -> contextlib.AbstractContextManager[str]:
    """A new, empty database for one run, dropped after (the tests' own helper)."""
    return database.fresh_postgres(base, prefix="vcc_bench")


# ---- Slack's requests --------------------------------------------------------------------


def signed_headers(body: str) -> dict[str, str]:
    """Slack's v0 signature over the body, with the bot's signing secret."""
    return payloads.signed_headers(SECRET, body)


def command_body(text: str, response_url: str, *, user: str = ADMIN, channel: str = CHANNEL) -> str:
    """The form Slack posts for `/vcc <text>`."""
    return urlencode(
        payloads.command_fields(
            text,
            response_url=response_url,
            trigger_id="123.456.abc",
            user=user,
            channel=channel,
            team=TEAM,
        )
    )


def click_body(
    action_id: str,
    value: str,
    response_url: str,
    *,
    user: str = ADMIN,
    channel: str = CHANNEL,
    message_ts: str = "1700000000.000001",
) -> str:
    """The form Slack posts for a button click on an ephemeral message."""
    return payloads.message_click(
        action_id,
        value,
        response_url=response_url,
        trigger_id="123.456.abc",
        message_ts=message_ts,
        user=user,
        channel=channel,
        team=TEAM,
    )


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A message's buttons by action_id."""
    return {
        e["action_id"]: e
        for block in message.get("blocks") or []
        for e in block.get("elements") or []
        if e.get("type") == "button"
    }
