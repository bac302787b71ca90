"""Ack latency and throughput of `/vcc status` under load: the bot against a bare bolt app.

Run from a checkout, with its venv:

    .venv/bin/python -m tests.benchmarks.ack_load [--duration 10] [--requests N] [--json FILE]
        [--profile FILE.speedscope.json]

Everything stays on 127.0.0.1: the fakes of tests/fakes run in this process, the bot
(`vcc-bot serve`) and a bare bolt app (tests/benchmarks/bare_app.py) run as child processes,
and wrk drives them (or, where wrk cannot be installed, an asyncio+httpx generator in a
child process, itself the bottleneck at 50 connections). Each run stops after --duration
seconds or --requests requests.

Bolt acks before the listener works (process_before_response=False), so the bot's ack
latency shows how much the background work of earlier commands holds up its event loop;
`drain s` is how long that work went on after the run, `checks` how many status checks
reached Salesforce's last call (the permission query).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.fernet import Fernet
from slack_sdk.signature import SignatureVerifier

from bot import ids
from tests.fakes import FakeSalesforce, FakeServer, FakeSlack

ROOT = Path(__file__).resolve().parents[2]
SECRET = "bench-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-bench-token"
CLIENT_ID, CLIENT_SECRET = "3MVG9-bench-client-id", "bench-client-secret-0123456789"
TEAM, ADMIN, CHANNEL, ACCOUNT = "T0001", "UADMIN1", "C0NOTICE", "acme"
SLOW_SALESFORCE = 2.0  # seconds per request in the last scenario

LUA = """
wrk.method = "POST"
wrk.body = [==[$body]==]
$headers
local left = $per_thread
function response(status, headers, body)
  left = left - 1
  if left <= 0 then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Result:
    target: str
    connections: int
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int
    errors: int  # non-2xx answers and socket errors
    cpu_pct: float  # the server process's CPU time over the run's wall time
    checks: int = 0  # status checks that reached Salesforce's permission query
    drain_s: float = 0.0  # until the bot's background work had stopped reaching the fakes


# ---- processes --------------------------------------------------------------------------


def free_port() -> int:
    """A free port below the ephemeral range, which wrk's many sockets never take."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for port in random.sample(range(max(1024, low - 12_000), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def logged_problems(log: str) -> dict[str, int]:
    """The server's warnings and errors, by message and the line that ends its traceback."""
    counts: Counter[str] = Counter()
    for record in re.split(r"\n(?=\d{4}-\d\d-\d\d )", log):
        lines = record.strip().splitlines()
        if lines and re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL) ", lines[0]):
            tail = f" <- {lines[-1][:120]}" if len(lines) > 1 else ""
            counts[lines[0].split(" ", 2)[-1][:120] + tail] += 1
    return dict(counts.most_common(10))


def spawn(
    stack: contextlib.ExitStack, cmd: list[str], env: dict[str, str], cwd: Path, log: Path, url: str
) -> subprocess.Popen[bytes]:
    """Start a server and wait (30 s at most) until its /healthz answers 200."""
    out = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    stack.callback(stop, proc)
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{url}/healthz").status_code == 200:
                    return proc
            time.sleep(0.05)  # poll interval
    raise TimeoutError(f"{cmd} did not answer {url}/healthz within 30 s")


def base_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}


def settle(fakes: list[FakeServer], quiet: float, timeout: float = 300.0) -> float:
    """Wait until no fake has heard a request for `quiet` s: the bot's backlog has drained."""
    start = changed = time.monotonic()
    last = -1
    while (now := time.monotonic()) - start < timeout:
        seen = sum(len(f.requests) for f in fakes)
        if seen != last:
            last, changed = seen, now
        elif now - changed >= quiet:
            return changed - start
        time.sleep(0.1)
    raise TimeoutError(f"the bot's background work did not drain within {timeout} s")


# ---- Slack's side -------------------------------------------------------------------------


def signed(body: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = str(SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body))
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }


def command_body(text: str, response_url: str) -> str:
    return urlencode(
        {
            "token": "unused",
            "team_id": TEAM,
            "team_domain": "acme",
            "channel_id": CHANNEL,
            "channel_name": "vcc-admins",
            "user_id": ADMIN,
            "user_name": "ada",
            "command": "/vcc",
            "text": text,
            "api_app_id": "A0VCC",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": "123.456.abc",
        }
    )


def click_body(action_id: str, value: str, response_url: str) -> str:
    payload = {
        "type": "block_actions",
        "user": {"id": ADMIN, "username": "ada", "name": "ada", "team_id": TEAM},
        "api_app_id": "A0VCC",
        "token": "unused",
        "container": {"type": "message", "channel_id": CHANNEL, "is_ephemeral": True},
        "trigger_id": "123.456.abc",
        "team": {"id": TEAM, "domain": "acme"},
        "channel": {"id": CHANNEL, "name": "vcc-admins"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "blk",
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


def post(http: httpx.Client, bot_url: str, body: str) -> None:
    response = http.post(f"{bot_url}/slack/events", content=body, headers=signed(body))
    response.raise_for_status()


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        e["action_id"]: e
        for block in message.get("blocks") or []
        for e in block.get("elements") or []
        if e.get("type") == "button"
    }


def link_account(slack: FakeSlack, prod: FakeSalesforce, bot_url: str) -> None:
    """Link ACCOUNT as an admin would: /vcc link, the production button, the DM's link."""
    with httpx.Client(timeout=10) as http, httpx.Client(timeout=10) as browser:
        url = slack.new_response_url()
        post(http, bot_url, command_body(f"link {ACCOUNT}", url))
        prompt = slack.wait_for(lambda: slack.responses(url))[0]
        value = buttons(prompt)[ids.LINK_PRODUCTION]["value"]
        post(http, bot_url, click_body(ids.LINK_PRODUCTION, value, slack.new_response_url()))
        dm = slack.wait_for(lambda: slack.dms_to(ADMIN))[-1]
        # The login page's button (a POST from its own origin), then the browser keeps the
        # bot's cookie: bot 303 -> Salesforce 302 -> callback 200.
        login_url = buttons(dm)[ids.LOGIN_OPEN]["url"]
        response = browser.post(login_url, headers={"Origin": bot_url})
        for _ in range(2):
            if response.status_code not in (302, 303):
                raise RuntimeError(f"expected a redirect, got {response.status_code}")
            response = browser.get(response.headers["location"])
        if response.status_code != 200:
            raise RuntimeError(f"the callback answered {response.status_code}: {response.text}")
        # One status check end to end, so the load below really exercises Salesforce.
        seen, url = len(prod.requests), slack.new_response_url()
        post(http, bot_url, command_body(f"status {ACCOUNT}", url))
        slack.wait_for(lambda: len(slack.responses(url)) >= 2)
        if len(prod.requests) < seen + 3:
            raise RuntimeError("/vcc status did not refresh, read identity and permissions")


# ---- load -------------------------------------------------------------------------------


def ensure_wrk() -> bool:
    if shutil.which("wrk"):
        return True
    install = "apt-get update -qq && apt-get install -y -qq wrk"
    subprocess.run(["sh", "-c", install], capture_output=True, check=False, timeout=300)
    return shutil.which("wrk") is not None


def load(
    url: str, response_url: str, conns: int, args: argparse.Namespace, tmp: Path
) -> tuple[int, int, int, int, int]:
    """One run of `/vcc status acme`; returns requests, duration, p50 and p99 (µs), errors."""
    body = command_body(f"status {ACCOUNT}", response_url)
    headers = signed(body)  # signed now: Slack's 5 minutes cover a run of seconds
    target = f"{url}/slack/events"
    if args.wrk:
        threads = min(conns, 2)
        script = tmp / "post.lua"
        lua = LUA.replace("$body", body).replace("$per_thread", str(args.requests // threads))
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script.write_text(lua.replace("$headers", lines))
        cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{args.duration}s", "--timeout", "10s"]
        cmd += ["--latency", "-s", str(script), target]
    else:
        spec = tmp / "spec.json"
        spec.write_text(json.dumps([target, body, headers, conns, args.duration, args.requests]))
        cmd = [sys.executable, "-m", "tests.benchmarks.ack_load", "--generate", str(spec)]
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, check=True, timeout=args.duration + 60
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    requests, duration, p50, p99, errors = map(int, line.split()[1:])
    return requests, duration, p50, p99, errors


async def generate(
    target: str, body: str, headers: dict[str, str], conns: int, duration: float, budget: int
) -> str:
    """The fallback load generator: `conns` workers, each one request at a time."""
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + duration
    limits = httpx.Limits(max_connections=conns)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:

        async def worker() -> None:
            nonlocal errors, budget
            while budget > 0 and time.monotonic() < end:
                budget -= 1
                started = time.perf_counter()
                try:
                    ok = (await http.post(target, content=body, headers=headers)).is_success
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(conns)))
        elapsed = time.monotonic() - start
    latencies.sort()
    p50, p99 = (latencies[min(len(latencies) - 1, int(q * len(latencies)))] for q in (0.5, 0.99))
    return (
        f"RESULT {len(latencies)} {int(elapsed * 1e6)} {int(p50 * 1e6)} {int(p99 * 1e6)} {errors}"
    )


# ---- profile ------------------------------------------------------------------------------


def top_functions(path: Path, count: int = 10) -> dict[str, Any]:
    """Own and total share of py-spy's non-idle samples per function (its lines merged).

    Frames on every sample of their thread (the entry chain down to the event loop) say
    nothing and are left out of `total`.
    """
    data = json.loads(path.read_text())
    names = [f"{f['name']} ({Path(f.get('file') or '?').name})" for f in data["shared"]["frames"]]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: dict[str, float] = {}
    chain: set[str] = set()
    for profile in data["profiles"]:
        busy = sum(profile["weights"])
        threads[profile["name"]] = round(busy, 2)
        mine: Counter[str] = Counter()
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if stack:
                own[names[stack[-1]]] += weight
            for name in {names[i] for i in stack}:
                mine[name] += weight
        chain |= {name for name, w in mine.items() if w >= busy - 1e-9}
        total += mine
    share = 100.0 / max(sum(threads.values()), 1e-9)
    informative = [(n, w) for n, w in total.most_common() if n not in chain][:count]
    return {
        "busy_seconds_by_thread": threads,
        "own_pct": [(n, round(w * share, 1)) for n, w in own.most_common(count)],
        "total_pct": [(n, round(w * share, 1)) for n, w in informative],
    }


def profile_bot(
    pid: int, url: str, response_url: str, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [spy, "record", "-p", str(pid), "-d", str(args.duration), "-r", "100"]
    cmd += ["-f", "speedscope", "-o", str(args.profile)]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as spy_proc:
        load(url, response_url, 50, args, tmp)
        _, err = spy_proc.communicate(timeout=args.duration + 60)
    if spy_proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode()[-1000:]}")
    return top_functions(args.profile)


# ---- main -------------------------------------------------------------------------------


def bot_env(
    slack: FakeSlack,
    prod: FakeSalesforce,
    sandbox: FakeSalesforce,
    bot_url: str,
    port: int,
    tmp: Path,
) -> dict[str, str]:
    """`vcc-bot serve`'s environment against the loopback fakes, on a fresh SQLite file."""
    return {
        **base_env(),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "SALESFORCE_CLIENT_ID": CLIENT_ID,
        "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET,
        "SALESFORCE_PRODUCTION_URL": prod.url,
        "SALESFORCE_SANDBOX_URL": sandbox.url,
        "PUBLIC_URL": bot_url,
        "DATABASE_URL": f"sqlite:///{tmp / 'vcc.db'}",
        "VCC_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "VCC_HEALTH_INTERVAL": "86400",  # keep the monitor out of the measurement
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }


def serve_bot(
    stack: contextlib.ExitStack, env: dict[str, str], tmp: Path, bot_url: str
) -> subprocess.Popen[bytes]:
    """`vcc-bot serve` in its own process, once it answers /healthz."""
    vcc_bot = Path(sys.executable).parent / "vcc-bot"
    cmd = [str(vcc_bot)] if vcc_bot.exists() else [sys.executable, "-m", "bot.cli"]
    # cwd: an empty directory, so no stray .env is read.
    return spawn(stack, [*cmd, "serve"], env, tmp, tmp / "bot.log", bot_url)


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vcc-bench-")))
        port, bare_port = free_port(), free_port()
        bot_url, bare_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
        slack = stack.enter_context(FakeSlack(bot_token=BOT_TOKEN, team_id=TEAM))
        slack.add_user(ADMIN, is_admin=True, name="ada")
        callback = f"{bot_url}/salesforce/callback"
        prod, sandbox = (
            stack.enter_context(
                FakeSalesforce(CLIENT_ID, CLIENT_SECRET, redirect_uri=callback, name=name)
            )
            for name in ("production", "sandbox")
        )
        prod.login_as = prod.add_user("00D000000000001AAA", "005000000000001AAA", "api@acme.test")
        slack_env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET}
        slack_env["SLACK_API_URL"] = slack.api_url
        env = bot_env(slack, prod, sandbox, bot_url, port, tmp)
        # Every status asks for a live check (concurrent ones share one), rather than
        # reusing the last result: the load then exercises Salesforce calls.
        env["VCC_CHECK_REUSE"] = "0"
        bot = serve_bot(stack, env, tmp, bot_url)
        bare_env = base_env() | slack_env | {"HOST": "127.0.0.1", "PORT": str(bare_port)}
        bare_cmd = [sys.executable, "-m", "tests.benchmarks.bare_app"]
        bare = spawn(stack, bare_cmd, bare_env, ROOT, tmp / "bare.log", bare_url)
        link_account(slack, prod, bot_url)

        # One response_url for every request, as a replayed request has: after 5 replies
        # the fake Slack answers 404 (as Slack would), which the bot ignores.
        response_url = slack.new_response_url()
        fakes: list[FakeServer] = [slack, prod]
        plan = [("bare bolt app", bare_url, bare.pid, 0.0), ("bot", bot_url, bot.pid, 0.0)]
        slow = f"bot, Salesforce {SLOW_SALESFORCE:g} s"
        plan.append((slow, bot_url, bot.pid, SLOW_SALESFORCE))
        for target, url, pid, delay in plan:
            prod.delay = delay
            for conns in (1, 50):
                queries = sum("/query" in r.path for r in prod.requests)
                cpu = cpu_seconds(pid)
                n, us, p50, p99, errors = load(url, response_url, conns, args, tmp)
                seconds = us / 1e6
                cpu_pct = 100 * (cpu_seconds(pid) - cpu) / seconds
                result = Result(
                    target, conns, p50 / 1000, p99 / 1000, n / seconds, n, errors, cpu_pct
                )
                # Requests arrive `delay` apart within one check: quiet must outlast that.
                result.drain_s = settle(fakes, quiet=1.0 + 2 * delay)
                result.checks = sum("/query" in r.path for r in prod.requests) - queries
                results.append(result)
                print(format_row(result), file=sys.stderr, flush=True)
        prod.delay = 0.0
        profile = profile_bot(bot.pid, bot_url, response_url, args, tmp) if args.profile else None
        if profile is not None:
            settle(fakes, quiet=1.0)
        problems = logged_problems((tmp / "bot.log").read_text(errors="replace"))
    return {
        "load_generator": "wrk" if args.wrk else "asyncio+httpx (wrk not installable)",
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "max_requests": args.requests,
        "results": [asdict(r) for r in results],
        "bot_logged": problems,
        "profile": profile,
    }


COLUMNS = ("conns", "p50 ms", "p99 ms", "req/s", "requests", "errors", "cpu %", "checks")
HEADER = f"{'target':<24}" + "".join(f"{c:>9}" for c in (*COLUMNS, "drain s"))


def format_row(r: Result) -> str:
    return (
        f"{r.target:<24}{r.connections:>9}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.rps:>9.0f}"
        f"{r.requests:>9}{r.errors:>9}{r.cpu_pct:>9.0f}{r.checks:>9}{r.drain_s:>9.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--requests", type=int, default=100_000, help="at most, per run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", type=Path, help="py-spy speedscope output of the bot")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # fallback generator
    args = parser.parse_args(argv)
    if args.generate:
        print(asyncio.run(generate(*json.loads(args.generate.read_text()))))
        return 0
    args.duration = math.ceil(args.duration)  # wrk takes whole seconds
    args.wrk = ensure_wrk()
    report = run(args)
    print(
        f"load generator: {report['load_generator']}; {args.duration} s or {args.requests} "
        "requests per run; latency of the ack (the bot's HTTP answer to /slack/events)"
    )
    print(HEADER)
    for row in report["results"]:
        print(format_row(Result(**row)))
    for problem, count in report["bot_logged"].items():
        print(f"bot logged {count}x: {problem}")
    if report["profile"]:
        busy = report["profile"]["busy_seconds_by_thread"]
        print(f"py-spy over {args.duration} s, busy seconds by thread: {busy}")
        for kind in ("own_pct", "total_pct"):
            print(f"  {kind}:")
            for name, pct in report["profile"][kind]:
                print(f"    {pct:5.1f}  {name}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
