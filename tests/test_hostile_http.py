"""What a stranger on the network can send the bot: huge bodies, forged log lines.

Over real sockets to the bot as `vcc-bot serve` composes it. The oversized requests announce
far more body than they send: only an answer that comes without the body proves the bot did
not wait to read it.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from bot.limits import MAX_BODY
from tests.support import SIGNING_SECRET, RunningBot, command_fields, text_of, wait_until

ROOT = Path(__file__).resolve().parents[1]
HUGE = 256 * 1024 * 1024  # the body a flood announces; it never sends more than a few bytes
ANSWER_WITHIN = 5.0  # seconds; waiting for the body would wait forever


def signature_headers(body: bytes = b"") -> dict[str, str]:
    """Slack's headers, signed over `body` (for an oversized request, over what is sent)."""
    stamp = str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(
        timestamp=stamp, body=body.decode()
    )
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}


@contextmanager
def connection(bot: RunningBot) -> Iterator[socket.socket]:
    parts = urlsplit(bot.url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=ANSWER_WITHIN) as sock:
        yield sock


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bot", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def status_of_answer(sock: socket.socket) -> int:
    """The status of the bot's answer, read before the rest of the body is sent."""
    received = b""
    try:
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        pytest.fail(f"no answer within {ANSWER_WITHIN} s: the bot is waiting for the body")
    assert received.startswith(b"HTTP/1.1 "), received
    return int(received.split()[1])


# ---- row 1: bodies are limited before they are read ---------------------------------------


def test_an_unsigned_slack_request_is_refused_before_its_body_is_read(bot):
    with connection(bot) as sock:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        sock.sendall(request_head("POST", "/slack/events", headers | {"Content-Length": str(HUGE)}))
        sock.sendall(b"command=%2Fvcc&text=")
        assert status_of_answer(sock) == 401


def test_an_unsigned_slack_request_is_refused_whatever_its_size(bot):
    # Within the size limit too: the signature headers are checked before the body is read.
    with connection(bot) as sock:
        sock.sendall(request_head("POST", "/slack/events", {"Content-Length": str(MAX_BODY)}))
        sock.sendall(b"command=%2Fvcc")
        assert status_of_answer(sock) == 401


@pytest.mark.parametrize(
    ("method", "path", "size"),
    [
        ("POST", "/slack/events", HUGE),
        ("POST", "/slack/events", 2 * 1024 * 1024),  # signed, and still far beyond Slack's
        ("POST", "/salesforce/callback", HUGE),
        ("POST", "/salesforce/login/token", HUGE),
        ("PUT", "/nowhere", HUGE),
    ],
    ids=["slack-256MB", "slack-2MB", "callback", "login", "unknown-route"],
)
def test_a_body_declared_larger_than_the_limit_is_refused_before_it_is_read(
    method, path, size, bot
):
    with connection(bot) as sock:
        sock.sendall(
            request_head(method, path, signature_headers() | {"Content-Length": str(size)})
        )
        sock.sendall(b"x" * 100)
        assert status_of_answer(sock) == 413


def test_a_chunked_body_past_the_limit_is_refused_before_it_ends(bot):
    with connection(bot) as sock:
        headers = signature_headers() | {"Transfer-Encoding": "chunked"}
        sock.sendall(request_head("POST", "/slack/events", headers))
        chunk = b"x" * 16 * 1024
        for _ in range(MAX_BODY // len(chunk) + 2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # No terminating chunk: the body never ends, so only the cap can answer.
        assert status_of_answer(sock) == 413


def test_a_signed_request_within_the_limit_is_answered(slack_client, slack):
    fields = command_fields(slack, "help")
    # Padded near the limit, as a long command text would be.
    fields["text"] = "help " + "x" * (MAX_BODY - len(urlencode(fields)) - 200)
    body = urlencode(fields)
    assert MAX_BODY - 400 < len(body) <= MAX_BODY
    assert slack_client.post(body).status_code == 200
    assert "/vcc link" in text_of(slack_client.replies(fields["response_url"])[0])


def test_a_signed_chunked_request_within_the_limit_is_answered(slack_client, slack):
    fields = command_fields(slack, "help")
    body = urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"} | signature_headers(body)
    pieces = iter([body[:100], body[100:]])  # a generator's body goes chunked
    response = slack_client.http.post(
        f"{slack_client.bot.url}/slack/events", content=pieces, headers=headers
    )
    assert response.status_code == 200
    assert "/vcc link" in text_of(slack_client.replies(fields["response_url"])[0])


# ---- row 8: log injection ---------------------------------------------------------------

FORGED = "2099-01-01 00:00:00,000 INFO vcc: admin U1 unlinked acme"


def test_a_path_with_control_characters_cannot_forge_an_access_log_line(caplog, bot):
    caplog.set_level(logging.INFO, logger="vcc.access")
    forged = FORGED.replace(" ", "%20")
    response = httpx.get(f"{bot.url}/x%0A{forged}%0D%1B[2J%C2%85", timeout=10)
    assert response.status_code == 404

    def logged() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "vcc.access" and r.getMessage().startswith("GET /x")
        ]

    (line,) = wait_until(logged, 5, "the access log line")
    assert line.startswith("GET /x\\n2099-01-01 00:00:00,000 INFO vcc: admin U1 unlinked acme")
    assert "\\r\\x1b[2J\\x85 404" in line
    assert line.isprintable(), line


def test_the_log_formatter_writes_each_message_on_one_line(tmp_path):
    # A fresh interpreter, so that configure_logging configures the root logger as in serve.
    script = f"""
import logging
from bot.cli import configure_logging
configure_logging("INFO")
log = logging.getLogger("vcc")
log.info("linked %s", "acme\\n{FORGED}\\r\\x1b[31m\\x85\\u2028end")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed for %s", "acme\\nforged")
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stderr.splitlines()
    assert lines[0].endswith(f"INFO vcc: linked acme\\n{FORGED}\\r\\x1b[31m\\x85\\u2028end"), (
        result.stderr
    )
    assert lines[0].isprintable()
    assert lines[1].endswith("ERROR vcc: failed for acme\\nforged"), result.stderr
    assert lines[2] == "Traceback (most recent call last):"  # the traceback stays readable
    assert lines[-1] == "ValueError: boom"


# ---- row 15: the SQLite database is private ---------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_new_sqlite_database_is_readable_by_its_owner_only(settings, tmp_path):
    database = tmp_path / "new" / "vcc-bot.db"
    database.parent.mkdir()
    previous = os.umask(0o022)  # the usual umask, under which files are created 0644
    running = RunningBot(settings.model_copy(update={"database_url": f"sqlite:///{database}"}))
    try:
        running.start()
        response = httpx.get(f"{running.url}/healthz", timeout=10)
        assert response.status_code == 200
        files = sorted(database.parent.iterdir())
        modes = {f.name: stat.filemode(f.stat().st_mode) for f in files}
    finally:
        running.stop()
        os.umask(previous)
    assert "vcc-bot.db-wal" in modes  # WAL mode: SQLite made it beside the database
    assert modes == dict.fromkeys(modes, "-rw-------"), modes
