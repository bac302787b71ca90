"""The bot's resident memory under a flood of huge request bodies.

Run from a checkout, with its venv:

    .venv/bin/python -m tests.benchmarks.flood [--parallel 4] [--unsigned-mb 256]
        [--signed-mb 64] [--json FILE]

`vcc-bot serve` runs as a child process against the loopback fakes of bot/standins (started
as tests/benchmarks/harness.py starts them; `python -m tests.benchmarks` runs the unsigned
round as its memory figure). Two rounds of parallel POSTs to /slack/events,
their bodies streamed from generators so that this client never holds them:

- unsigned, with a Content-Length: the bot should refuse them before reading any body;
- signed (the signature computed as the body streams), chunked, with no Content-Length:
  only a cap on the bytes read stops those.

For each round: the bot's VmRSS just before it, the highest VmRSS sampled during it and
VmHWM (the kernel's own peak, reset before the round where the kernel allows), each answer,
and how much of each body the bot had let the client send when its answer came.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.harness import SECRET, Fakes, Sampler, memory_kb, reset_hwm, serve_bot

CHUNK = b"a" * (1 << 20)  # one MiB, yielded over and over
MB = 1 << 20


@dataclass
class Round:
    name: str
    requests: int
    mb_each: int
    answers: list[str]  # status codes, or the client's error when it got none
    sent_mb: list[float]  # of each body, when the answer (or the error) came
    seconds: float
    rss_idle_mb: float
    rss_peak_mb: float  # sampled every 10 ms
    hwm_mb: float | None  # the kernel's peak since the round began; None if not resettable


class Body:
    """`mb` MiB streamed a MiB at a time, counting what the server let through."""

    def __init__(self, mb: int) -> None:
        self.mb = mb
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.mb):
            yield CHUNK
            self.sent += len(CHUNK)

    def signature(self, timestamp: str) -> str:
        """Slack's v0 signature, computed as the body streams: it is never in memory whole."""
        mac = hmac.new(SECRET.encode(), f"v0:{timestamp}:".encode(), hashlib.sha256)
        for _ in range(self.mb):
            mac.update(CHUNK)
        return f"v0={mac.hexdigest()}"


def send(url: str, mb: int, *, signed: bool) -> tuple[str, float]:
    body = Body(mb)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed:
        stamp = str(int(time.time()))
        headers["X-Slack-Request-Timestamp"] = stamp
        headers["X-Slack-Signature"] = body.signature(stamp)
    else:
        headers["Content-Length"] = str(mb * MB)  # httpx then streams it as is, not chunked
    try:
        with httpx.Client(timeout=300) as http:
            answer = str(
                http.post(f"{url}/slack/events", content=body, headers=headers).status_code
            )
    except httpx.HTTPError as exc:
        answer = type(exc).__name__
    return answer, body.sent / MB


def flood(name: str, pid: int, url: str, parallel: int, mb: int, *, signed: bool) -> Round:
    time.sleep(1.0)  # let the previous round's memory settle
    idle = memory_kb(pid, "VmRSS")
    resettable = reset_hwm(pid)
    started = time.monotonic()
    with Sampler(pid) as sampler, ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda _: send(url, mb, signed=signed), range(parallel)))
    seconds = time.monotonic() - started
    hwm = memory_kb(pid, "VmHWM") / 1024 if resettable else None
    return Round(
        name=name,
        requests=parallel,
        mb_each=mb,
        answers=[answer for answer, _ in results],
        sent_mb=[round(sent, 1) for _, sent in results],
        seconds=round(seconds, 2),
        rss_idle_mb=round(idle / 1024, 1),
        rss_peak_mb=round(sampler.peak_kb / 1024, 1),
        hwm_mb=None if hwm is None else round(hwm, 1),
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vcc-flood-")))
        fakes = Fakes().start(stack)
        bot = serve_bot(stack, fakes, tmp)
        rounds = [
            flood(
                "unsigned, Content-Length",
                bot.pid,
                bot.url,
                args.parallel,
                args.unsigned_mb,
                signed=False,
            ),
            flood("signed, chunked", bot.pid, bot.url, args.parallel, args.signed_mb, signed=True),
        ]
        with httpx.Client(timeout=10) as http:
            healthy = http.get(f"{bot.url}/healthz").status_code == 200
    return {"rounds": [asdict(r) for r in rounds], "healthy_after": healthy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=4, help="requests at once, per round")
    parser.add_argument("--unsigned-mb", type=int, default=256, help="MiB per unsigned body")
    parser.add_argument("--signed-mb", type=int, default=64, help="MiB per signed body")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    report = run(args)
    header = f"{'round':<26}{'n x MiB':>10}{'idle MiB':>10}{'peak MiB':>10}{'HWM MiB':>10}"
    print(header + f"{'seconds':>9}  answers (MiB sent)")
    for r in map(lambda row: Round(**row), report["rounds"]):
        hwm = "n/a" if r.hwm_mb is None else f"{r.hwm_mb:.1f}"
        answers = ", ".join(f"{a} ({s:g})" for a, s in zip(r.answers, r.sent_mb, strict=True))
        print(
            f"{r.name:<26}{f'{r.requests} x {r.mb_each}':>10}{r.rss_idle_mb:>10.1f}"
            f"{r.rss_peak_mb:>10.1f}{hwm:>10}{r.seconds:>9.2f}  {answers}"
        )
    print(f"/healthz after the flood: {'200' if report['healthy_after'] else 'not 200'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
