"""`vcc-bot demo`: the real bot against the stand-ins, with no settings at all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[1]


def test_vcc_bot_demo_runs_without_any_settings_and_stops_on_ctrl_c(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "VCC_", "SALESFORCE_"))
    }
    env.pop("DATABASE_URL", None)
    env.pop("PUBLIC_URL", None)
    demo = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "demo", "--no-browser"],
        cwd=tmp_path,  # no .env here
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Open http://" in line for line in lines), 30, "the demo's URL")
        url = re.search(r"Open (http://127\.0\.0\.1:\d+/)", "".join(lines))[1]  # type: ignore[index]
        wait_until(lambda: _answers(url), 10, "the Slack side's page")
        page = httpx.get(url)
        assert "vcc-bot demo" in page.text and '<html lang="en">' in page.text
        sent = httpx.post(f"{url}command", json={"text": "/vcc link acme"})
        assert sent.json()["status"] == 200

        def prompt() -> dict | None:
            shown = httpx.get(f"{url}state").json()["channel"]
            return next((m for m in shown if m.get("blocks")), None)

        wait_until(prompt, 10, "the bot's answer in the channel")
        assert "Link VCC account *acme* to Salesforce" in str(prompt())
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=30) == 0
    reader.join(timeout=5)
    assert not [line for line in lines if "Traceback" in line], "".join(lines)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_without_settings_points_to_the_demo(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "VCC_", "SALESFORCE_"))
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "vcc-bot demo" in done.stderr
