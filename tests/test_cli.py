"""`vcc-bot` as an operator runs it: its own process, a bare environment, no stray .env."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from tests.support import free_port, wait_until

VCC_BOT = Path(sys.executable).parent / "vcc-bot"
REQUIRED = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SALESFORCE_CLIENT_ID",
    "SALESFORCE_CLIENT_SECRET",
    "PUBLIC_URL",
    "VCC_ENCRYPTION_KEY",
)


def valid_settings(tmp_path: Path) -> dict[str, str]:
    # Commands that do not serve call nothing, so the outside services may point nowhere.
    return {
        "SLACK_BOT_TOKEN": "xoxb-cli-test-bot-token-4242",
        "SLACK_SIGNING_SECRET": "cli-test-signing-secret-4242",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "SALESFORCE_CLIENT_ID": "3MVG9-cli-test-client",
        "SALESFORCE_CLIENT_SECRET": "cli-test-client-secret-4242",
        "SALESFORCE_PRODUCTION_URL": "http://127.0.0.1:9",
        "SALESFORCE_SANDBOX_URL": "http://127.0.0.1:9",
        "PUBLIC_URL": "http://127.0.0.1:3000",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'vcc.db'}",
        "VCC_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }


def bare_env(**settings: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), **settings}


def vcc_bot(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VCC_BOT), *args],
        env=bare_env(**settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def problems(stderr: str) -> list[str]:
    """The listed problems of a SettingsError message, one per `  - NAME: ...` line."""
    return [line.removeprefix("  - ") for line in stderr.splitlines() if line.startswith("  - ")]


def test_serve_with_nothing_set_names_every_required_setting(tmp_path):
    result = vcc_bot(tmp_path, "serve")
    assert result.returncode == 2
    listed = problems(result.stderr)
    for name in REQUIRED:
        assert any(p.startswith(f"{name}: missing") for p in listed), name
    # The bot token is one of two ways to reach Slack: the message names the other too.
    assert any("SLACK_CLIENT_ID and SLACK_CLIENT_SECRET" in p for p in listed)
    assert ".env.example" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_settings_are_each_named(tmp_path):
    env = valid_settings(tmp_path) | {
        "SLACK_BOT_TOKEN": "nope",
        "VCC_ENCRYPTION_KEY": "short",
        "PUBLIC_URL": "ftp://x",
        "VCC_ADMIN_USERS": "bob",
    }
    result = vcc_bot(tmp_path, "serve", **env)
    assert result.returncode == 2
    found = dict(p.split(": ", 1) for p in problems(result.stderr))
    assert set(found) == {"SLACK_BOT_TOKEN", "VCC_ENCRYPTION_KEY", "PUBLIC_URL", "VCC_ADMIN_USERS"}
    assert "xoxb-" in found["SLACK_BOT_TOKEN"]
    assert "Fernet key" in found["VCC_ENCRYPTION_KEY"]
    assert "https URL" in found["PUBLIC_URL"]
    assert "bob" in found["VCC_ADMIN_USERS"]
    assert "Traceback" not in result.stderr


def test_settings_are_read_from_dot_env_in_the_working_directory(tmp_path):
    lines = [f"{k}={v}" for k, v in valid_settings(tmp_path).items()] + ["PORT=0"]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    result = vcc_bot(tmp_path, "serve")
    assert result.returncode == 2
    found = problems(result.stderr)
    assert len(found) == 1 and found[0].startswith("PORT:"), result.stderr


def test_socket_mode_needs_an_app_token(tmp_path):
    result = vcc_bot(tmp_path, "serve", "--socket-mode", **valid_settings(tmp_path))
    assert result.returncode == 2
    assert [p.split(":")[0] for p in problems(result.stderr)] == ["SLACK_APP_TOKEN"]


def test_socket_mode_names_the_app_token_among_all_missing_settings(tmp_path):
    result = vcc_bot(tmp_path, "serve", "--socket-mode")
    assert result.returncode == 2
    named = {p.split(":")[0] for p in problems(result.stderr)}
    assert {*REQUIRED, "SLACK_APP_TOKEN"} <= named


def test_keygen_prints_a_new_fernet_key_each_time(tmp_path):
    first, second = (vcc_bot(tmp_path, "keygen") for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0
    key = first.stdout.strip()
    Fernet(key.encode())  # raises if it is not a valid key
    assert key != second.stdout.strip()


def test_db_upgrade_creates_the_tables(tmp_path):
    database = tmp_path / "x.db"
    env = valid_settings(tmp_path) | {"DATABASE_URL": f"sqlite:///{database}"}
    result = vcc_bot(tmp_path, "db", "upgrade", **env)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"vcc_account", "login_attempt", "alembic_version"} <= tables


def test_serve_answers_health_checks_and_logs_no_secret(tmp_path, slack):
    port = free_port()
    # Ready once the database answers and Slack has said who the bot is (auth.test).
    env = valid_settings(tmp_path) | {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SLACK_API_URL": slack.api_url,
        "SLACK_BOT_TOKEN": slack.bot_token,
    }
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "bot.log").open("w+") as log:
        proc = subprocess.Popen(
            [str(VCC_BOT), "serve"], env=bare_env(**env), cwd=tmp_path, stdout=log, stderr=log
        )
        try:
            wait_until(lambda: healthy(f"{base}/healthz"), 20, "vcc-bot serve to answer /healthz")
            # Requests that carry secrets of their own: the access log must not keep them.
            login_token, state, code = "L" * 43, "S" * 43, "aPrxSECRETCODE"
            httpx.get(f"{base}/salesforce/login/{login_token}", timeout=5)
            callback = httpx.get(
                f"{base}/salesforce/callback", params={"state": state, "code": code}, timeout=5
            )
            assert callback.status_code == 400
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        log.seek(0)
        output = log.read()
    assert "vcc-bot listening" in output  # the log was written here, so its absences count
    assert "GET /salesforce/callback 400" in output
    secrets = [
        env["SLACK_BOT_TOKEN"],
        env["SLACK_SIGNING_SECRET"],
        env["SALESFORCE_CLIENT_SECRET"],
        env["VCC_ENCRYPTION_KEY"],
        login_token,
        state,
        code,
    ]
    for secret in secrets:
        assert secret not in output


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False  # still starting
