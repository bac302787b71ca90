"""A lean HTTP/1.1 load generator (closed loop or fixed rate), run as its own process.

    .venv/bin/python -m tests.benchmarks.loadgen < job.json > result.json

The job names a host and port, a list of complete raw requests (already signed: this
process does no signing, no JSON and no URL encoding per request), a number of
connections, a duration and a request budget. Each connection is one client: it sends a
request on its keep-alive connection, reads the whole answer, and only then sends the
next (closed loop, as wrk does). Latency is measured from the first byte written to the
last byte of the answer read.

With a `rate` (requests per second, over all connections), the load is open instead, as
wrk2 makes it: connection i sends its k-th request at start + (k * connections + i) / rate,
whatever the server's answers. A closed loop at many connections measures the server's
saturation (each answer brings the next request at once, so latency is connections /
throughput); a fixed rate measures latency at a load the server is offered, as Slack
offers it. A request sent late because its connection still waited for the previous
answer counts from when it was due (no "coordinated omission": a stall is not hidden).

Only the standard library is imported, and the per-request work is a write, a
`readuntil` and a `readexactly`: this process costs a small share of a core, so on a
2-core machine it does not become the bottleneck it would be with an HTTP client library.
`run_load` is the parent's side: it starts this module as a child and reads its answer.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HARD_STOP = 30.0  # seconds after the duration when answers still outstanding are given up


@dataclass(frozen=True)
class LoadResult:
    requests: int  # answered, within the measured window
    errors: int  # answers other than 2xx, and connections that failed
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    rps: float
    generator_cpu_pct: float  # this generator's own CPU over the run, in % of one core
    statuses: dict[str, int]
    latencies_ms: list[float] | None = None  # every latency, when the job asked to keep them


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not ordered:
        return 0.0
    rank = min(len(ordered), max(1, math.ceil(q * len(ordered))))
    return ordered[rank - 1]


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns its status and whether the server will close."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    closing = b"\r\nconnection: close" in lower
    start = lower.find(b"\r\ncontent-length:")
    if start >= 0:
        end = lower.index(b"\r\n", start + 2)
        length = int(lower[start + 17 : end])
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                break
    else:
        await reader.read()  # delimited by the close
        closing = True
    return status, closing


async def generate(job: dict[str, Any]) -> LoadResult:
    host, port = job["host"], int(job["port"])
    requests = [r.encode("latin-1") for r in job["requests"]]
    conns, duration = int(job["connections"]), float(job["duration"])
    budget = int(job.get("max_requests") or 10**9)
    rate = float(job.get("rate") or 0.0)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    issued = 0
    start = time.perf_counter()
    end = start + duration

    async def client(index: int) -> None:
        nonlocal errors, issued
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        due = start + index / rate if rate else 0.0
        while issued < budget and time.perf_counter() < end:
            scheduled = due
            if rate:
                if scheduled >= end:
                    break
                if (wait := scheduled - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                due += conns / rate
            request = requests[issued % len(requests)]
            issued += 1
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                sent = scheduled if rate else time.perf_counter()
                writer.write(request)
                status, closing = await _read_answer(reader)
                latencies.append(time.perf_counter() - sent)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                errors += 1
                statuses["socket error"] = statuses.get("socket error", 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)  # a refused connection must not spin
                continue
            key = str(status)
            statuses[key] = statuses.get(key, 0) + 1
            errors += not 200 <= status < 300
            if closing and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    tasks = [asyncio.create_task(client(i)) for i in range(conns)]
    _, late = await asyncio.wait(tasks, timeout=duration + HARD_STOP)
    for task in late:
        task.cancel()
    elapsed = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    if late:
        statuses["unanswered"] = len(late)
        errors += len(late)
    ordered = sorted(latencies)
    return LoadResult(
        requests=len(ordered),
        errors=errors,
        seconds=round(elapsed, 3),
        p50_ms=round(percentile(ordered, 0.50) * 1000, 2),
        p90_ms=round(percentile(ordered, 0.90) * 1000, 2),
        p99_ms=round(percentile(ordered, 0.99) * 1000, 2),
        max_ms=round((ordered[-1] if ordered else 0.0) * 1000, 2),
        rps=round(len(ordered) / elapsed, 1) if elapsed else 0.0,
        generator_cpu_pct=round(100 * cpu_s / elapsed, 1) if elapsed else 0.0,
        statuses=statuses,
        latencies_ms=[round(x * 1000, 3) for x in ordered] if job.get("keep") else None,
    )


def raw_post(host: str, port: int, path: str, body: str, headers: dict[str, str]) -> str:
    """One complete HTTP/1.1 POST, as the generator sends it (latin-1 text)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines) + "\r\n\r\n" + body  # form bodies are ASCII


def run_load(
    host: str,
    port: int,
    requests: list[str],
    *,
    connections: int,
    duration: float,
    max_requests: int = 0,
    keep: bool = False,
    rate: float = 0.0,
) -> LoadResult:
    """Run the generator in a child process (off the servers' interpreters) and wait;
    `keep` returns every latency too, for windows to be combined; `rate` (requests per
    second over all connections) makes the load open instead of closed-loop."""
    job = {
        "host": host,
        "port": port,
        "requests": requests,
        "connections": connections,
        "duration": duration,
        "max_requests": max_requests,
        "keep": keep,
        "rate": rate,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.loadgen"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=duration + HARD_STOP + 30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{done.stderr[-3000:]}")
    return LoadResult(**json.loads(done.stdout))


def main() -> int:
    result = asyncio.run(generate(json.load(sys.stdin)))
    json.dump(result.__dict__, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
