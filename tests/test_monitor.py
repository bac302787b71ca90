"""The health monitor inside `vcc-bot serve`: finds broken links, tells once, shares the work."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from bot.cli import build
from storage import repository as repo
from tests.support import CHANNEL, TEAM, bot_with, link, text_of, wait_until


@pytest.fixture
def watched(settings, slack):
    """The bot with a one-second health interval, and a Slack client for it."""
    with bot_with(settings, slack, vcc_health_interval=1) as served:
        yield served


def notices(slack, words: str) -> list[dict]:
    return [m for m in slack.messages_to(CHANNEL) if words in text_of(m)]


def refreshes(fake) -> list[str]:
    return [
        r.form["refresh_token"]
        for r in fake.requests
        if r.path == "/services/oauth2/token" and r.form.get("grant_type") == "refresh_token"
    ]


def health(running, account: str = "acme"):
    with running.runtime.db.transaction() as session:
        row = repo.get_account(session, team_id=TEAM, account_id=account)
        return row.health, row.health_reason


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("revoke", "invalid_grant"),
        ("deactivate", "inactive"),
        ("remove_permission", "lost required permissions: Edit Tasks"),
    ],
)
def test_the_monitor_finds_a_broken_link_and_says_so_once(
    breakage, reason, watched, salesforce, slack, browser
):
    running, client = watched
    assert link(client, browser, "acme").status_code == 200
    wait_until(lambda: refreshes(salesforce.production), 10, "a first monitor pass")
    assert notices(slack, "is broken") == []

    user = salesforce.api_user
    if breakage == "revoke":
        salesforce.production.revoke_user_tokens(user)
    elif breakage == "deactivate":
        user.active = False
    else:
        user.permissions["PermissionsEditTask"] = False
    slack.wait_for(lambda: notices(slack, "is broken"), timeout=10)
    assert health(running)[0] == "broken"

    # Two more passes find the same state: still one notice. (The reason is read after
    # them: a breakage landing mid-pass shows first as a refused fresh access token.)
    seen = len(refreshes(salesforce.production))
    wait_until(lambda: len(refreshes(salesforce.production)) >= seen + 2, 10, "two more passes")
    assert len(notices(slack, "is broken")) == 1
    state, why = health(running)
    assert state == "broken" and reason in why
    history = client.replies(client.command("history acme"))[0]
    assert "Found broken* by monitor" in text_of(history)


def test_a_relinked_link_is_announced_recovered_once(watched, salesforce, slack, browser):
    running, client = watched
    assert link(client, browser, "acme").status_code == 200
    salesforce.production.revoke_user_tokens(salesforce.api_user)
    slack.wait_for(lambda: notices(slack, "is broken"), timeout=10)
    assert link(client, browser, "acme").status_code == 200
    slack.wait_for(lambda: notices(slack, "works again"))
    seen = len(refreshes(salesforce.production))
    wait_until(lambda: len(refreshes(salesforce.production)) >= seen + 2, 10, "two more passes")
    assert len(notices(slack, "works again")) == 1
    assert len(notices(slack, "is broken")) == 1
    assert health(running) == ("healthy", None)


def test_a_monitor_that_cannot_reach_salesforce_does_not_call_links_broken(
    watched, salesforce, slack, browser
):
    running, client = watched
    assert link(client, browser, "acme").status_code == 200
    salesforce.production.fail_next("/services/oauth2/token", 503, count=3)
    wait_until(
        lambda: len([r for r in salesforce.production.requests if r.path.endswith("/token")]) >= 4,
        10,
        "three refused refreshes",
    )
    assert health(running)[0] == "healthy"
    assert notices(slack, "is broken") == []


def test_replicas_share_the_checks_each_link_once_per_interval(
    slack_client, browser, salesforce, settings, bot
):
    accounts = [f"acct-{n}" for n in range(4)]
    for account in accounts:
        with httpx.Client(timeout=10) as each_browser:
            assert link(slack_client, each_browser, account).status_code == 200
    # Each link re-checks the API user's other links; count only the monitor's refreshes.
    wait_until(lambda: not bot.runtime.background.busy, 10, "the re-checks after linking")
    seen = len(refreshes(salesforce.production))
    # Two more replicas on the same database (the served bot's own pass is a minute away).
    replicas = [build(settings) for _ in range(2)]
    barrier = threading.Barrier(len(replicas))
    checked: list[int] = []

    def one_pass(runtime) -> None:
        barrier.wait(timeout=30)
        checked.append(asyncio.run(runtime.monitor.run_once()))

    threads = [threading.Thread(target=one_pass, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert sum(checked) == len(accounts)
        tokens = refreshes(salesforce.production)[seen:]
        assert len(tokens) == len(accounts) and len(set(tokens)) == len(accounts)
        # Nothing is due again before the interval has passed.
        assert asyncio.run(replicas[0].monitor.run_once()) == 0
    finally:
        for runtime in replicas:
            runtime.db.dispose()
