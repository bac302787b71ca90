"""One bot, many Slack workspaces: Slack's OAuth install, tokens encrypted at rest and
rotated, tenant isolation (Enterprise Grid included), and the app leaving a workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text

from bot import ids
from bot.crypto import TokenCipher
from storage import repository as repo
from tests.fakes import FakeSlack
from tests.support import (
    CHANNEL,
    RunningBot,
    SlackClient,
    bot_with,
    buttons,
    command_fields,
    link,
    open_login,
    start_link,
    text_of,
    wait_until,
)

ALPHA, BETA = "T0ALPHA", "T0BETA"
ALPHA_ADMIN, BETA_ADMIN = "UALPHA01", "UBETA001"
GRID, GRID_ONE, GRID_TWO = "E0GRID", "T0GRID1", "T0GRID2"
GRID_ADMIN = "WGRIDADM1"  # Grid user ids are the same in every workspace of the org


@dataclass
class Tenant:
    team: str
    admin: str
    slack: SlackClient

    def ask(self, words: str) -> dict:
        return self.slack.replies(self.slack.command(words, user=self.admin))[0]

    def status(self, account: str) -> str:
        return text_of(self.ask(f"status {account}"))


def many_workspace_settings(settings, slack: FakeSlack):
    return {
        "slack_bot_token": None,
        "slack_client_id": slack.client_id,
        "slack_client_secret": SecretStr(slack.client_secret),
    }


@pytest.fixture
def fleet(settings, slack: FakeSlack) -> Iterator[RunningBot]:
    """The bot installable into many workspaces; two of them, Alpha and Beta, exist."""
    slack.add_workspace(ALPHA, team_name="Alpha")
    slack.add_workspace(BETA, team_name="Beta")
    slack.add_user(ALPHA_ADMIN, is_admin=True, team_id=ALPHA, name="ann")
    slack.add_user(BETA_ADMIN, is_admin=True, team_id=BETA, name="bob")
    with bot_with(settings, slack, **many_workspace_settings(settings, slack)) as (running, _):
        yield running


@contextmanager
def tenant(
    running: RunningBot, slack: FakeSlack, team: str, admin: str, **grid
) -> Iterator[Tenant]:
    client = SlackClient(running, slack, team=team, **grid)
    try:
        yield Tenant(team, admin, client)
    finally:
        client.http.close()


def install(browser: httpx.Client, running: RunningBot, slack: FakeSlack, team: str, user: str):
    """An admin installs the app from the bot's install link, as in a browser."""
    slack.approve_installs_as(team, user)
    start = browser.get(f"{running.url}/slack/install")
    assert start.status_code == 302, start.text
    at_slack = browser.get(start.headers["location"])
    assert at_slack.status_code == 302, at_slack.text
    back = at_slack.headers["location"]
    assert back.startswith(f"{running.url}/slack/oauth_redirect?")
    return browser.get(back)


@contextmanager
def both_linked(
    running: RunningBot, slack: FakeSlack, browser: httpx.Client
) -> Iterator[tuple[Tenant, Tenant]]:
    """Alpha and Beta installed, each with an account `acme` linked to the same API user."""
    install(browser, running, slack, ALPHA, ALPHA_ADMIN)
    install(browser, running, slack, BETA, BETA_ADMIN)
    with (
        tenant(running, slack, ALPHA, ALPHA_ADMIN) as alpha,
        tenant(running, slack, BETA, BETA_ADMIN) as beta,
    ):
        assert link(alpha.slack, browser, "acme", user=ALPHA_ADMIN).status_code == 200
        browser.cookies.clear()
        assert link(beta.slack, browser, "acme", user=BETA_ADMIN).status_code == 200
        yield alpha, beta


def stored_bot_tokens(running: RunningBot) -> list[tuple[str | None, str]]:
    with running.runtime.db.engine.connect() as conn:
        rows = conn.execute(text("SELECT team_id, bot_token FROM slack_bots")).all()
    return [(team, token) for team, token in rows]


# ---- install ---------------------------------------------------------------------------


def test_install_stores_each_workspace_with_its_token_encrypted(fleet, slack, browser):
    page = install(browser, fleet, slack, ALPHA, ALPHA_ADMIN)
    assert page.status_code == 200
    install(browser, fleet, slack, BETA, BETA_ADMIN)

    stored = dict(stored_bot_tokens(fleet))
    assert set(stored) == {ALPHA, BETA}
    live = {ALPHA: slack.workspaces[ALPHA].bot_token, BETA: slack.workspaces[BETA].bot_token}
    cipher = TokenCipher(fleet.settings.encryption_keys)
    for team, sealed in stored.items():
        assert "xoxb-" not in sealed  # never in clear at rest
        assert cipher.decrypt(sealed) == live[team]


def test_an_install_whose_state_cookie_is_missing_or_replayed_stores_nothing(fleet, slack, browser):
    slack.approve_installs_as(ALPHA, ALPHA_ADMIN)
    start = browser.get(f"{fleet.url}/slack/install")
    back = browser.get(start.headers["location"]).headers["location"]
    with httpx.Client(timeout=10) as other_browser:  # no state cookie: a forged redirect
        refused = other_browser.get(back)
    assert refused.status_code >= 400
    assert stored_bot_tokens(fleet) == []
    assert browser.get(back).status_code == 200  # the right browser completes it
    assert browser.get(back).status_code >= 400  # once: the state is consumed
    assert len(stored_bot_tokens(fleet)) == 1


def test_a_cancelled_install_stores_nothing(fleet, slack, browser):
    slack.approve_installs_as(ALPHA, ALPHA_ADMIN)
    slack.cancel_installs()
    start = browser.get(f"{fleet.url}/slack/install")
    back = browser.get(start.headers["location"]).headers["location"]
    assert "error=access_denied" in back
    page = browser.get(back)
    assert "Something Went Wrong" in page.text and "access_denied" in page.text
    assert stored_bot_tokens(fleet) == []


# ---- isolation ---------------------------------------------------------------------------


def test_two_workspaces_with_one_api_user_never_see_or_touch_each_other(
    fleet, slack, salesforce, browser
):
    with both_linked(fleet, slack, browser) as (alpha, beta):
        assert "Linked" in alpha.status("acme") and "Linked" in beta.status("acme")

        # The callback is no Slack request, yet each result went out with its own token.
        for team, admin in ((ALPHA, ALPHA_ADMIN), (BETA, BETA_ADMIN)):
            posted = slack.messages_from(team)
            assert any("linked" in text_of(m).lower() for m in posted)
            others = {m["_team"] for m in slack.dms_to(admin)}
            assert others == {team}

        # Beta's history is Beta's alone; Beta unlinking leaves Alpha's link as it was.
        history = text_of(beta.ask("history acme"))
        assert ALPHA_ADMIN not in history and BETA_ADMIN in history
        warning = beta.ask("unlink acme")
        confirm = buttons(warning)[ids.UNLINK_CONFIRM]["value"]
        beta.slack.replies(beta.slack.click(ids.UNLINK_CONFIRM, confirm, user=BETA_ADMIN))
        wait_until(lambda: "Unlinked" in beta.status("acme"), 10, "Beta's unlink")
        assert "Linked" in alpha.status("acme")
        alpha_history = text_of(alpha.ask("history acme"))
        assert "nlinked" not in alpha_history and BETA_ADMIN not in alpha_history


def test_an_admin_of_one_workspace_is_no_admin_in_another(fleet, slack, browser):
    install(browser, fleet, slack, ALPHA, ALPHA_ADMIN)
    install(browser, fleet, slack, BETA, BETA_ADMIN)
    with tenant(fleet, slack, ALPHA, ALPHA_ADMIN) as alpha:
        # Beta's admin, sending a (validly signed) command that names Alpha: Alpha's token
        # asks Alpha's users.info, which does not know them.
        reply = alpha.slack.replies(alpha.slack.command("link acme", user=BETA_ADMIN))[0]
        assert "Only workspace admins" in text_of(reply) or "could not confirm" in text_of(reply)
        assert slack.dms_to(BETA_ADMIN) == []


def test_an_org_wide_grid_install_serves_each_workspace_of_the_org_apart(settings, slack, browser):
    for team in (GRID_ONE, GRID_TWO):
        slack.add_workspace(team, enterprise_id=GRID, org_wide=True)
    slack.add_user(GRID_ADMIN, is_admin=True, team_id=GRID_ONE, name="gus")
    with bot_with(settings, slack, **many_workspace_settings(settings, slack)) as (running, _):
        install(browser, running, slack, GRID_ONE, GRID_ADMIN)
        (stored,) = stored_bot_tokens(running)
        assert stored[0] is None  # org-wide: stored for the enterprise, not a workspace
        with (
            tenant(running, slack, GRID_ONE, GRID_ADMIN, enterprise=GRID, org_wide=True) as one,
            tenant(running, slack, GRID_TWO, GRID_ADMIN, enterprise=GRID, org_wide=True) as two,
        ):
            assert link(one.slack, browser, "acme", user=GRID_ADMIN).status_code == 200
            # The callback found the org's token for a workspace it never saw a request of.
            assert any("acme" in text_of(m) for m in slack.messages_to(CHANNEL))
            with running.runtime.db.transaction(write=False) as session:
                row = repo.get_account(session, team_id=GRID_ONE, account_id="acme")
                assert row is not None and row.enterprise_id == GRID
            assert "Unlinked" in two.status("acme")  # another workspace of the org


# ---- rotation ------------------------------------------------------------------------------


def test_rotating_tokens_are_refreshed_when_they_expire_and_stored_encrypted(
    settings, slack, salesforce, browser
):
    slack.add_workspace(ALPHA, team_name="Alpha", rotating=True)
    slack.add_user(ALPHA_ADMIN, is_admin=True, team_id=ALPHA, name="ann")
    # Tokens that live one hour are due at once: the bot rotates two hours before expiry.
    slack.token_lifetime = 3600
    with bot_with(settings, slack, **many_workspace_settings(settings, slack)) as (running, _):
        install(browser, running, slack, ALPHA, ALPHA_ADMIN)
        first = slack.workspaces[ALPHA].bot_token
        assert first is not None and first.startswith("xoxe.xoxb-")
        with tenant(running, slack, ALPHA, ALPHA_ADMIN) as alpha:
            # A request and a callback (no request: the bot's own lookup) both rotate.
            assert link(alpha.slack, browser, "acme", user=ALPHA_ADMIN).status_code == 200
            assert "Linked" in alpha.status("acme")
        fresh = slack.workspaces[ALPHA].bot_token
        assert fresh != first
        (_, sealed), *_ = stored_bot_tokens(running)
        assert "xox" not in sealed
        assert TokenCipher(running.settings.encryption_keys).decrypt(sealed) == fresh
        refreshes = [c for c in slack.calls_to("oauth.v2.access") if c.get("refresh_token")]
        assert refreshes  # rotated through Slack's refresh grant, on SLACK_API_URL
        assert any(c.method == "chat.postMessage" and c.team_id == ALPHA for c in slack.calls)


def test_a_burst_of_requests_while_the_token_is_due_rotates_it_once_and_answers_all(
    settings, slack, browser
):
    # Slack revokes a refresh token once used: requests that each rotated it would all
    # but one be refused, and dropped after their early 200, with nobody told.
    slack.add_workspace(ALPHA, team_name="Alpha", rotating=True)
    slack.add_user(ALPHA_ADMIN, is_admin=True, team_id=ALPHA, name="ann")
    slack.token_lifetime = 3600  # due at once: the bot rotates two hours before expiry
    with bot_with(settings, slack, **many_workspace_settings(settings, slack)) as (running, _):
        install(browser, running, slack, ALPHA, ALPHA_ADMIN)
        slack.token_lifetime = 12 * 3600  # the rotated token is not due again
        refreshes = len([c for c in slack.calls_to("oauth.v2.access") if c.get("refresh_token")])
        with tenant(running, slack, ALPHA, ALPHA_ADMIN) as alpha:
            fields = [
                command_fields(slack, "status acme", user=ALPHA_ADMIN, team=ALPHA) for _ in range(8)
            ]
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda f: alpha.slack.post(urlencode(f)), fields))
            assert [a.status_code for a in answers] == [200] * 8
            for sent in fields:
                assert "acme" in text_of(alpha.slack.replies(sent["response_url"], timeout=10)[0])
        rotated = [c for c in slack.calls_to("oauth.v2.access") if c.get("refresh_token")]
        assert len(rotated) == refreshes + 1


# ---- leaving a workspace -----------------------------------------------------------------


def test_uninstall_forgets_the_token_withdraws_login_links_and_keeps_the_links(
    settings, slack, salesforce, browser
):
    slack.add_workspace(ALPHA, team_name="Alpha")
    slack.add_user(ALPHA_ADMIN, is_admin=True, team_id=ALPHA, name="ann")
    changes = many_workspace_settings(settings, slack) | {"vcc_health_interval": 1}
    with bot_with(settings, slack, **changes) as (running, _):
        install(browser, running, slack, ALPHA, ALPHA_ADMIN)
        with tenant(running, slack, ALPHA, ALPHA_ADMIN) as alpha:
            assert link(alpha.slack, browser, "acme", user=ALPHA_ADMIN).status_code == 200
            pending = start_link(alpha.slack, "beta", user=ALPHA_ADMIN)

            slack.uninstall(ALPHA)
            event = slack.app_uninstalled_event(ALPHA)
            assert alpha.slack.event(event).status_code == 200
            wait_until(lambda: stored_bot_tokens(running) == [], 10, "the installation gone")
            # Delivered again (Slack retries): nothing more to do, nothing fails.
            assert alpha.slack.event(event).status_code == 200
            revoked = slack.tokens_revoked_event(ALPHA)
            assert alpha.slack.event(revoked).status_code == 200

            browser.cookies.clear()
            page = open_login(browser, pending.login_url)
            assert page.status_code in (400, 410), page.text
            assert "withdrawn" in page.text.lower() or "no longer" in page.text.lower()

            # The link stays: the contact centre keeps working.
            with running.runtime.db.transaction(write=False) as session:
                row = repo.get_account(session, team_id=ALPHA, account_id="acme")
                assert row is not None and row.status == "Linked"

            # A break found meanwhile is recorded, and its notice waits (no token to post).
            posted = len(slack.messages)
            salesforce.production.revoke_user_tokens(salesforce.api_user)

            def paused() -> bool:
                with running.runtime.db.transaction(write=False) as session:
                    events = repo.recent_events(session, team_id=ALPHA, account_id="acme")
                return any("app_not_installed" in (e.detail or "") for e in events)

            wait_until(paused, 15, "the broken notice recorded as paused")
            assert len(slack.messages) == posted

            # Installed again: the workspace is served, and notices flow, with the new token.
            install(browser, running, slack, ALPHA, ALPHA_ADMIN)
            assert "Broken" in alpha.status("acme") or "broken" in alpha.status("acme")
            browser.cookies.clear()
            assert link(alpha.slack, browser, "acme", user=ALPHA_ADMIN).status_code == 200
            new_token = slack.workspaces[ALPHA].bot_token
            notices = [m for m in slack.messages_from(ALPHA)[posted:] if "acme" in text_of(m)]
            assert notices and len(slack.messages) > posted
            assert not slack.token_info(new_token)["revoked"]


# ---- operators -----------------------------------------------------------------------------

VCC_BOT = Path(sys.executable).parent / "vcc-bot"


def vcc_bot(running: RunningBot, cwd: Path, *args: str, **env: str):
    s = running.settings
    assert s.slack_client_secret is not None
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "SLACK_CLIENT_ID": s.slack_client_id or "",
        "SLACK_CLIENT_SECRET": s.slack_client_secret.get_secret_value(),
        "SLACK_SIGNING_SECRET": s.slack_signing_secret.get_secret_value(),
        "SLACK_API_URL": s.slack_api_url,
        "SALESFORCE_CLIENT_ID": s.salesforce_client_id,
        "SALESFORCE_CLIENT_SECRET": s.salesforce_client_secret.get_secret_value(),
        "SALESFORCE_PRODUCTION_URL": s.salesforce_production_url,
        "SALESFORCE_SANDBOX_URL": s.salesforce_sandbox_url,
        "PUBLIC_URL": s.public_url,
        "DATABASE_URL": s.database_url,
        "VCC_ENCRYPTION_KEY": s.vcc_encryption_key.get_secret_value(),
        **env,
    }
    return subprocess.run(
        [str(VCC_BOT), *args], env=environ, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_rotate_key_reencrypts_the_slack_tokens_too(fleet, slack, browser, tmp_path):
    install(browser, fleet, slack, ALPHA, ALPHA_ADMIN)
    old = fleet.settings.vcc_encryption_key.get_secret_value()
    new = Fernet.generate_key().decode()
    result = vcc_bot(fleet, tmp_path, "rotate-key", VCC_ENCRYPTION_KEY=f"{new},{old}")
    assert result.returncode == 0, result.stderr
    assert "Slack tokens of 2 installation record(s)" in result.stdout  # bot and install rows
    (_, sealed), *_ = stored_bot_tokens(fleet)
    assert TokenCipher([new]).decrypt(sealed) == slack.workspaces[ALPHA].bot_token
    # The bot, restarted knowing only the new key, serves the workspace.
    fleet.settings = fleet.settings.model_copy(update={"vcc_encryption_key": SecretStr(new)})
    fleet.restart()
    with tenant(fleet, slack, ALPHA, ALPHA_ADMIN) as alpha:
        assert "Unlinked" in alpha.status("acme")


def test_operators_list_and_unlink_one_workspaces_accounts(
    fleet, slack, salesforce, browser, tmp_path
):
    with both_linked(fleet, slack, browser) as (alpha, beta):
        listed = vcc_bot(fleet, tmp_path, "accounts", "--team", BETA)
        assert listed.returncode == 0, listed.stderr
        lines = [line for line in listed.stdout.splitlines() if "acme" in line]
        assert len(lines) == 1 and lines[0].startswith(BETA) and "Linked" in lines[0]
        assert f"installed in: {BETA}, {ALPHA}" in listed.stdout

        revoked_before = len(salesforce.production.revoked)
        gone = vcc_bot(fleet, tmp_path, "unlink", "--team", BETA, "acme")
        assert gone.returncode == 0, gone.stderr
        assert len(salesforce.production.revoked) == revoked_before + 1
        assert "Unlinked" in beta.status("acme") and "Linked" in alpha.status("acme")
        # The notice went to Beta's channel with Beta's token, naming the operator.
        unlinked = [m for m in slack.messages_from(BETA) if "unlinked" in text_of(m).lower()]
        assert unlinked
        assert not [m for m in slack.messages_from(ALPHA) if "unlinked" in text_of(m).lower()]

        again = vcc_bot(fleet, tmp_path, "unlink", "--team", BETA, "acme")
        assert again.returncode == 1 and "not linked" in again.stderr.lower()
