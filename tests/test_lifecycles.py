"""The core along its lifecycles, end to end: tokens are never orphaned or lost, checks
run one at a time, a relink's cost is reported, an unlink withdraws its login links.

Each test reproduces a defect found against `vcc-bot serve` with the loopback fakes. They
drive the bot only from outside (signed Slack requests, the admin's browser) and read the
database only with plain SQL, so they hold for any structure of the core.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from bot import ids
from bot.cli import build
from tests.fakes import Recorded
from tests.support import (
    ADMIN,
    CHANNEL,
    TEAM,
    DatabaseHold,
    RunningBot,
    SlackClient,
    bot_with,
    link,
    open_login,
    start_link,
    text_of,
    wait_until,
)

# ---- helpers -----------------------------------------------------------------------------


def sql(settings: Any, query: str, **params: Any) -> list[Any]:
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query), params))
    finally:
        engine.dispose()


def account_row(settings: Any, account: str = "acme") -> Any:
    rows = sql(
        settings,
        "SELECT status, health, health_reason, refresh_token_encrypted, check_lease_until "
        "FROM vcc_account WHERE team_id = :team AND account_id = :account",
        team=TEAM,
        account=account,
    )
    return rows[0] if rows else None


def stored_token(settings: Any, account: str = "acme") -> str:
    encrypted = account_row(settings, account).refresh_token_encrypted
    key = settings.vcc_encryption_key.get_secret_value().split(",")[0]
    return Fernet(key.encode()).decrypt(encrypted.encode()).decode()


def events(settings: Any, kind: str) -> list[Any]:
    return sql(
        settings,
        "SELECT account_id, detail FROM audit_event WHERE event = :kind ORDER BY id",
        kind=kind,
    )


def pending_rows(settings: Any) -> int:
    return sql(settings, "SELECT count(*) FROM pending_token")[0][0]


def refreshes(fake: Any) -> list[Recorded]:
    return [
        r
        for r in list(fake.requests)
        if r.path == "/services/oauth2/token" and r.form.get("grant_type") == "refresh_token"
    ]


def notices(slack: Any, words: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages_to(CHANNEL) if words in text_of(m)]


def status_text(client: SlackClient, account: str = "acme", timeout: float = 10) -> str:
    """`/vcc status`: one answer, after the live check."""
    return text_of(client.replies(client.command(f"status {account}"), 1, timeout)[-1])


@pytest.fixture
def quick_db_bot(settings: Any, slack: Any) -> Iterator[tuple[RunningBot, SlackClient]]:
    """The bot with a one-second database timeout, so a held database fails fast."""
    with bot_with(settings, slack, database_timeout=1.0) as served:
        yield served


# ---- 1. a token exchanged while the database is down ---------------------------------------


def test_a_token_exchanged_while_the_database_is_down_is_revoked_and_recorded_later(
    quick_db_bot, settings, salesforce, slack, browser
):
    _, client = quick_db_bot
    sf = salesforce.production
    start = start_link(client, "acme")
    to_salesforce = open_login(browser, start.login_url)
    back = browser.get(to_salesforce.headers["location"])
    hold = DatabaseHold(settings.database_url)

    def stop_the_database(req: Recorded) -> None:
        # Salesforce answers the code exchange; from then on the database does not.
        if req.form.get("grant_type") == "authorization_code":
            hold.take()

    sf.on_request = stop_the_database
    try:
        page = browser.get(back.headers["location"], timeout=30)
        sf.on_request = None
        token = sf.issued[-1]
        assert page.status_code == 503, page.text
        assert "database is not answering" in page.text
        assert "revoked" in page.text
        # Revoked at Salesforce at once: it holds none of the API user's five approvals.
        assert token in sf.revoked
        assert token not in sf.live_refresh_tokens(salesforce.api_user)
        dm = slack.wait_for(lambda: [m for m in slack.dms_to(ADMIN) if "database" in text_of(m)])
        assert "no link was made" in text_of(dm[-1])
    finally:
        sf.on_request = None
        hold.release()
    # Once the database answers again, what happened is recorded.
    wait_until(lambda: events(settings, "link_refused"), 15, "the refusal in the audit trail")
    assert "database unavailable" in events(settings, "link_refused")[0].detail
    assert pending_rows(settings) == 0
    assert account_row(settings) is None or account_row(settings).status != "Linked"


# ---- 2. a rotated refresh token survives a check that fails after the refresh --------------


@pytest.mark.parametrize("failure", ["identity_503", "slower_than_the_wait"])
def test_a_rotated_refresh_token_survives_a_check_that_fails_after_the_refresh(
    failure, slack_client, browser, bot, salesforce, settings, slack
):
    sf = salesforce.production
    assert link(slack_client, browser, "acme").status_code == 200
    sf.rotate_refresh_tokens = True
    if failure == "identity_503":
        sf.fail_next("/id/", 503)
        assert "Could not check" in status_text(slack_client)
    else:
        # The person stops waiting after a few seconds; the check itself must go on.
        sf.slow_next(lambda r: r.path.startswith("/id/"), 8.0)
        assert "did not answer in time" in status_text(slack_client, timeout=15)
        wait_until(
            lambda: account_row(settings).check_lease_until is None, 15, "the check to finish"
        )
    # Salesforce now knows only the rotated token, and the bot stored it.
    live = sf.live_refresh_tokens(salesforce.api_user)
    assert live == [stored_token(settings)]
    assert "the link works" in status_text(slack_client)
    assert notices(slack, "is broken") == []


# ---- 3. a relink that costs another account's approval -------------------------------------


def test_a_relink_that_costs_another_accounts_approval_tells_its_channel_and_the_admin(
    slack_client, browser, bot, salesforce, settings, slack
):
    for n in range(1, 6):
        assert link(slack_client, browser, f"acct-{n}").status_code == 200
    wait_until(lambda: not bot.runtime.background.busy, 10, "the re-checks after linking")
    assert notices(slack, "is broken") == []

    # Before relinking, the admin is told the API user already holds five approvals.
    prompt = text_of(slack_client.replies(slack_client.command("link acct-3"))[0])
    assert "already holds 5 approvals" in prompt and "oldest" in prompt

    # The relink is a sixth approval: Salesforce silently revokes the oldest, acct-1's.
    assert link(slack_client, browser, "acct-3").status_code == 200
    notice = slack.wait_for(lambda: notices(slack, "is broken"), timeout=10)
    assert len(notice) == 1 and "acct-1" in text_of(notice[0])
    assert "sixth connection" in text_of(notice[0])
    dm = slack.wait_for(
        lambda: [m for m in slack.dms_to(ADMIN) if "revoked the oldest link" in text_of(m)]
    )
    assert "acct-1" in text_of(dm[-1]) and "acct-3" in text_of(dm[-1])
    row = account_row(settings, "acct-1")
    assert row.health == "broken" and "sixth connection" in row.health_reason
    for n in (2, 3, 4, 5):
        assert account_row(settings, f"acct-{n}").health == "healthy"


# ---- 4. concurrent checks share one live check -----------------------------------------------


def test_concurrent_status_checks_share_one_live_check(
    slack_client, browser, bot, salesforce, slack
):
    sf = salesforce.production
    assert link(slack_client, browser, "acme").status_code == 200
    # Rotation on and a slow identity call: two checks at once would refresh twice, and
    # the second refresh (with a token the first one rotated away) would read as broken.
    sf.rotate_refresh_tokens = True
    sf.slow_next(lambda r: r.path.startswith("/id/"), 1.0, count=20)
    before = len(refreshes(sf))
    urls: list[str] = []
    lock = threading.Lock()

    def ask() -> None:
        url = slack_client.command("status acme")
        with lock:
            urls.append(url)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    finals = [text_of(slack_client.replies(url, timeout=15)[-1]) for url in urls]
    assert len(finals) == 20
    assert all("the link works" in body for body in finals), finals
    assert len(refreshes(sf)) - before == 1
    assert notices(slack, "is broken") == [] and notices(slack, "works again") == []


def test_a_check_younger_than_thirty_seconds_is_reused_and_dated(
    settings, slack, browser, salesforce
):
    with bot_with(settings, slack, vcc_check_reuse=30) as (_, client):  # the default
        assert link(client, browser, "acme").status_code == 200
        before = len(refreshes(salesforce.production))
        body = status_text(client)
        assert "the link works" in body
        assert "Last checked" in body and "Salesforce was not asked again" in body
        assert len(refreshes(salesforce.production)) == before


def test_two_replicas_asked_at_once_make_one_live_check(
    slack_client, browser, bot, salesforce, settings
):
    sf = salesforce.production
    assert link(slack_client, browser, "acme").status_code == 200
    sf.slow_next(lambda r: r.path.startswith("/id/"), 1.5)
    before = len(refreshes(sf))
    url = slack_client.command("status acme")  # replica A starts a check...
    sf.wait_for(lambda: len(refreshes(sf)) > before)
    replica = build(settings)  # ...and replica B, on the same database, is asked too
    results: list[Any] = []

    def ask_replica_b() -> None:
        async def check() -> Any:
            try:
                return await replica.health.check(TEAM, "acme", actor="UOTHER1")
            finally:
                await replica.aclose()

        results.append(asyncio.run(check()))

    thread = threading.Thread(target=ask_replica_b)
    thread.start()
    thread.join(timeout=30)
    replica.db.dispose()
    assert "the link works" in text_of(slack_client.replies(url, timeout=15)[-1])
    assert len(refreshes(sf)) - before == 1  # B waited for A's result instead of refreshing
    assert results and results[0].health == "healthy"


# ---- 5. unlink withdraws the login links sent before it --------------------------------------


def unlink(client: SlackClient, account: str = "acme") -> None:
    result = client.replies(client.click(ids.UNLINK_CONFIRM, account))[0]
    assert "now *Unlinked*" in text_of(result)


def test_unlink_withdraws_a_login_link_sent_before_it(
    slack_client, browser, bot, salesforce, settings
):
    assert link(slack_client, browser, "acme").status_code == 200
    relink = start_link(slack_client, "acme")  # a relink is started...
    unlink(slack_client)  # ...and the account unlinked before it is opened
    page = open_login(browser, relink.login_url)
    assert page.status_code == 410
    assert "withdrawn" in page.text and "unlinked" in page.text
    assert account_row(settings).status == "Unlinked"


def test_unlink_withdraws_a_login_already_at_salesforce(
    slack_client, browser, bot, salesforce, settings
):
    sf = salesforce.production
    assert link(slack_client, browser, "acme").status_code == 200
    relink = start_link(slack_client, "acme")
    to_salesforce = open_login(browser, relink.login_url)
    back = browser.get(to_salesforce.headers["location"])  # the admin clicked Allow
    unlink(slack_client)  # meanwhile another admin unlinks
    page = browser.get(back.headers["location"])
    assert page.status_code == 410 and "withdrawn" in page.text
    assert account_row(settings).status == "Unlinked"
    # Salesforce was never asked for a token for it, so none is left live.
    assert sf.live_refresh_tokens(salesforce.api_user) == []


# ---- 6. one HTTP client for Salesforce -------------------------------------------------------


def test_salesforce_calls_share_one_connection_pool(slack_client, browser, bot, salesforce):
    sf = salesforce.production
    assert link(slack_client, browser, "acme").status_code == 200
    for _ in range(3):
        assert "the link works" in status_text(slack_client)
    # The bot's own calls: token exchange, identity, query, then three refreshes with
    # their identity and query calls. (The browser's visit to the authorize page is not.)
    calls = [r for r in sf.requests if r.path != "/services/oauth2/authorize"]
    assert len(calls) >= 12
    # Calls one after another reuse a kept-alive connection instead of opening (and, on
    # https, negotiating TLS with a new context) one each.
    assert len({r.client_port for r in calls}) <= 2, [r.client_port for r in calls]
    bot.stop()
    assert bot.runtime is not None and bot.runtime.salesforce.closed


# ---- 7. SQLite readers do not queue behind a writer ------------------------------------------


def test_reads_answer_while_another_client_holds_the_write_lock(
    settings, slack, database_url, salesforce
):
    if not database_url.startswith("sqlite"):
        pytest.skip("about SQLite's write lock")
    hold = DatabaseHold(settings.database_url)
    with bot_with(settings, slack, database_timeout=30.0) as (_, client):
        hold.take()
        try:
            started = time.monotonic()
            reply = client.replies(client.command("status acme"), timeout=5)[0]
            assert "*Unlinked*" in text_of(reply)
            history = client.replies(client.command("history acme"), timeout=5)[0]
            assert "No history yet" in text_of(history)
            assert time.monotonic() - started < 5
        finally:
            hold.release()
