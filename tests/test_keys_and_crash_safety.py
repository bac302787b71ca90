"""Encryption keys (rotation, a key lost) and a process killed in the middle of a link.

All from the outside: `vcc-bot rotate-key` and `vcc-bot serve` run as their own processes
with an explicit environment, the bot is driven with signed Slack requests and the admin's
browser, and the database is only read (and, once, aged) with plain SQLAlchemy.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, update

from bot.config import Settings
from bot.messages import UNDECRYPTABLE
from storage.models import PendingToken, utcnow
from tests.support import (
    CHANNEL,
    SlackClient,
    bot_with,
    link,
    open_login,
    start_link,
    text_of,
    wait_until,
)
from tests.support.database import account_row, pending_count
from tests.support.running import operator_env

VCC_BOT = Path(sys.executable).parent / "vcc-bot"
# How long the fake Salesforce holds every request while a link is being interrupted: the
# code exchange, then the identity call the bot is killed in. Well under the bot's 10 s
# Salesforce timeout, well over the few milliseconds the test needs to notice and kill.
HANG_SECONDS = 2.0


# ---- helpers --------------------------------------------------------------------------


def rotate_key(settings: Settings, cwd: Path, keys: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VCC_BOT), "rotate-key"],
        env=operator_env(settings, VCC_ENCRYPTION_KEY=keys),
        cwd=cwd,  # no stray .env
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Engine]:
    """The bot's database, opened on its own (not through the bot)."""
    engine = create_engine(settings.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def broken_notices(slack: Any) -> list[dict[str, Any]]:
    return [m for m in slack.messages_to(CHANNEL) if "is broken" in text_of(m)]


def healthy(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False  # not listening (yet, or any more)


@contextmanager
def bot_with_key(settings: Settings, slack: Any, key: str) -> Iterator[SlackClient]:
    """The bot (in-process, as the `bot` fixture runs it) with VCC_ENCRYPTION_KEY=key."""
    with bot_with(settings, slack, vcc_encryption_key=SecretStr(key)) as (_, client):
        yield client


def final_status(client: SlackClient, account: str = "acme") -> str:
    """`/vcc status`: one answer, after the live check."""
    return text_of(client.replies(client.command(f"status {account}"), timeout=10)[-1])


# ---- 1. key rotation --------------------------------------------------------------------


def test_rotate_key_re_encrypts_with_the_new_key_and_the_old_key_can_go(
    settings, slack_client, browser, bot, salesforce, slack, db, tmp_path
):
    key_a = settings.vcc_encryption_key.get_secret_value()
    key_b = Fernet.generate_key().decode()
    assert link(slack_client, browser, "acme").status_code == 200
    before = account_row(db).refresh_token_encrypted
    bot.stop()  # maintenance window; the new bot below needs the port

    result = rotate_key(settings, tmp_path, f"{key_b},{key_a}")
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 1 token(s)" in result.stdout
    assert "No key decrypts" not in result.stdout

    stored = account_row(db).refresh_token_encrypted
    assert stored != before
    with pytest.raises(InvalidToken):
        Fernet(key_a.encode()).decrypt(stored.encode())
    token = Fernet(key_b.encode()).decrypt(stored.encode()).decode()
    assert salesforce.production.live_refresh_tokens(salesforce.api_user) == [token]

    with bot_with_key(settings, slack, key_b) as client:
        assert "the link works" in final_status(client)
    assert broken_notices(slack) == []


# ---- 2. a token no configured key decrypts ------------------------------------------------


def test_a_token_no_key_decrypts_is_broken_not_a_crash(
    settings, slack_client, browser, bot, slack, db
):
    assert link(slack_client, browser, "acme").status_code == 200
    bot.stop()
    key_c = Fernet.generate_key().decode()  # key A is gone, e.g. lost in a redeploy

    with bot_with_key(settings, slack, key_c) as client:
        body = final_status(client)
        assert "Broken" in body and UNDECRYPTABLE in body and "/vcc link acme" in body
        notice = slack.wait_for(lambda: broken_notices(slack))
        assert UNDECRYPTABLE in text_of(notice[0]) and "acme" in text_of(notice[0])
        # Still serving: health checks, other commands, and the same status again.
        assert httpx.get(f"{settings.public_url}/healthz", timeout=5).status_code == 200
        help_reply = client.replies(client.command("help"))[0]
        assert "/vcc link" in text_of(help_reply)
        assert UNDECRYPTABLE in final_status(client)
    assert len(broken_notices(slack)) == 1  # found broken twice, announced once
    row = account_row(db)
    assert (row.health, row.health_reason) == ("broken", UNDECRYPTABLE)


def test_rotate_key_names_and_marks_broken_a_token_no_key_decrypts(
    settings, slack_client, browser, bot, slack, db, tmp_path
):
    key_a = settings.vcc_encryption_key.get_secret_value()
    assert link(slack_client, browser, "acme").status_code == 200
    bot.stop()
    before = account_row(db)
    assert before.health == "healthy"

    result = rotate_key(settings, tmp_path, Fernet.generate_key().decode())
    assert result.returncode == 0, result.stderr
    assert "Re-encrypted 0 token(s)" in result.stdout
    assert "No key decrypts the token of T0001/acme" in result.stdout
    assert "Traceback" not in result.stderr

    row = account_row(db)
    assert (row.health, row.health_reason) == ("broken", UNDECRYPTABLE)
    # Left as it was: with key A back, an operator could still recover it.
    assert row.refresh_token_encrypted == before.refresh_token_encrypted
    Fernet(key_a.encode()).decrypt(row.refresh_token_encrypted.encode())
    notice = broken_notices(slack)  # sent by the rotate-key process before it exited
    assert len(notice) == 1 and UNDECRYPTABLE in text_of(notice[0])


# ---- 3. a process killed between the code exchange and the commit -------------------------


@contextmanager
def serving(settings: Settings, cwd: Path, name: str, **extra: str) -> Iterator[Any]:
    """`vcc-bot serve` in its own process on the fixture's public port, until it answers."""
    env = operator_env(settings, HOST="127.0.0.1", PORT=str(settings.port), **extra)
    log_path = cwd / f"{name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(VCC_BOT), "serve"], env=env, cwd=cwd, stdout=log, stderr=log)
        proc.log_path = log_path  # type: ignore[attr-defined]
        try:
            wait_until(
                lambda: healthy(settings.public_url) or proc.poll() is not None,
                30,
                f"{name} to answer /healthz",
            )
            assert proc.poll() is None, log_path.read_text()
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)


def refreshes(fake: Any) -> int:
    return sum(
        1
        for r in list(fake.requests)
        if r.path == "/services/oauth2/token" and r.form.get("grant_type") == "refresh_token"
    )


def test_a_token_left_pending_by_a_killed_process_is_revoked_at_the_next_start(
    settings, slack, salesforce, browser, db, tmp_path
):
    sf = salesforce.production
    client = SlackClient(SimpleNamespace(url=settings.public_url), slack)  # type: ignore[arg-type]
    outcome: list[Any] = []

    with serving(settings, tmp_path, "first") as first:
        # A link that completes, so the health monitor of a later start has visible work.
        assert link(client, browser, "other").status_code == 200
        start = start_link(client, "acme")
        to_salesforce = open_login(browser, start.login_url)
        assert to_salesforce.status_code == 303
        back = browser.get(to_salesforce.headers["location"])
        assert back.status_code == 302
        callback_url = back.headers["location"]

        sf.delay = HANG_SECONDS  # the exchange and then the identity call hang

        def follow_callback() -> None:
            try:
                outcome.append(browser.get(callback_url, timeout=HANG_SECONDS * 5))
            except httpx.HTTPError as exc:  # the server dies under the request
                outcome.append(exc)

        thread = threading.Thread(target=follow_callback, daemon=True)
        thread.start()
        wait_until(lambda: pending_count(db) > 0, HANG_SECONDS * 3, "a pending token row")
        first.kill()  # SIGKILL: no shutdown, no cleanup, mid-link
        first.wait(timeout=10)
        sf.delay = 0
    thread.join(timeout=HANG_SECONDS * 6)
    assert not thread.is_alive()
    assert isinstance(outcome[0], httpx.HTTPError), outcome  # the link never finished

    token = sf.issued[-1]  # the one exchanged for acme's code
    assert token in sf.live_refresh_tokens(salesforce.api_user)
    assert token not in sf.revoked
    acme = account_row(db, "acme")
    assert acme is None or acme.status != "Linked"
    assert pending_count(db) == 1

    # 4. Restarted within the grace period: the token may still belong to a link that
    # another replica is completing right now, so start-up must leave it alone. A monitor
    # pass (visible as a refresh of "other") runs only after the start-up sweep, so once it
    # is seen, the sweep has had its chance.
    seen = refreshes(sf)
    with serving(settings, tmp_path, "second", VCC_HEALTH_INTERVAL="1"):
        sf.wait_for(lambda: refreshes(sf) > seen, timeout=15)
        assert token in sf.live_refresh_tokens(salesforce.api_user)
        assert token not in sf.revoked
        assert pending_count(db) == 1

    # Make the row older than PENDING_GRACE (5 minutes) instead of waiting for it: as if the
    # operator had brought the bot back a while after the crash. A row that old cannot
    # belong to a link still in progress anywhere, so the next start must revoke it.
    with db.begin() as conn:
        conn.execute(update(PendingToken).values(created_at=utcnow() - timedelta(hours=1)))

    with serving(settings, tmp_path, "third") as third:
        sf.wait_for(lambda: token in sf.revoked, timeout=15)
        wait_until(lambda: pending_count(db) == 0, 10, "the pending row to be deleted")
        assert token not in sf.live_refresh_tokens(salesforce.api_user)
        # Only that token: the completed link of "other" is untouched.
        assert sf.issued[-2] in sf.live_refresh_tokens(salesforce.api_user)
        assert account_row(db, "other").health == "healthy"
    log = third.log_path.read_text()
    assert "revoked 1 token(s) left pending by an interrupted link" in log
    assert token not in log


def test_an_old_token_whose_revocation_failed_at_relink_is_revoked_later(
    database_url, slack_client, browser, bot, salesforce, db
):
    if not database_url.startswith("sqlite"):
        pytest.skip("about the relink's bookkeeping, not storage: once is enough")
    sf = salesforce.production
    assert link(slack_client, browser, "acme").status_code == 200
    old = sf.issued[-1]
    sf.fail_next("/services/oauth2/revoke", 503)  # Salesforce hiccups during the relink
    assert link(slack_client, browser, "acme").status_code == 200
    new = sf.issued[-1]
    assert old not in sf.revoked and old in sf.live_refresh_tokens(salesforce.api_user)

    # Long after (anything kept for a retry is past PENDING_GRACE), the bot starts again;
    # the old token, which no link holds any more, must not stay live at Salesforce.
    bot.stop()
    with db.begin() as conn:
        conn.execute(update(PendingToken).values(created_at=utcnow() - timedelta(hours=1)))
    bot.start()
    sf.wait_for(lambda: old not in sf.live_refresh_tokens(salesforce.api_user), timeout=3)
    assert sf.live_refresh_tokens(salesforce.api_user) == [new]
