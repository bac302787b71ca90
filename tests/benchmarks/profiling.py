"""py-spy profiles of a server under load, summed up by function."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def py_spy() -> str | None:
    """py-spy from PATH or beside this interpreter (`pip install py-spy`), if installed."""
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def record(
    pid: int, out: Path, seconds: float, during: Callable[[], T]
) -> tuple[T, dict[str, Any]]:
    """Sample `pid` (its threads too, idle ones left out) at 100 Hz while `during` runs.

    Returns what `during` returned and the summary of the profile (top_functions);
    `out` keeps the speedscope file for a closer look (https://www.speedscope.app).
    """
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    cmd = [spy, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "100"]
    cmd += ["-f", "speedscope", "-o", str(out)]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        result = during()
        _, err = proc.communicate(timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode()[-1000:]}")
    return result, top_functions(out)


def top_functions(path: Path, count: int = 12) -> dict[str, Any]:
    """Own and total share of py-spy's non-idle samples per function (its lines merged).

    Frames on every sample of their thread (the entry chain down to the event loop) say
    nothing and are left out of `total_pct`.
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


def format_profile(summary: dict[str, Any], indent: str = "  ") -> list[str]:
    lines = [f"{indent}busy seconds by thread: {summary['busy_seconds_by_thread']}"]
    for kind, title in (("own_pct", "own time"), ("total_pct", "inclusive time")):
        lines.append(f"{indent}{title} (% of busy samples):")
        lines += [f"{indent}  {pct:5.1f}  {name}" for name, pct in summary[kind]]
    return lines
