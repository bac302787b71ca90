"""`/vcc doctor` and `vcc-bot doctor`: every check of the configuration, and what to fix.

End to end: signed slash commands into the running bot, the CLI as its own process, and
the loopback fakes of Slack and Salesforce (whose behaviours the doctor relies on are
tested at the bottom).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bot import blocks
from bot.doctor import DoctorReport, Finding
from tests.fakes import FakeSalesforce, FakeSlack
from tests.support import (
    ADMIN,
    CHANNEL,
    CLIENT_ID,
    CLIENT_SECRET,
    MEMBER,
    RunningBot,
    SlackClient,
    bot_with,
    free_port,
    link,
    text_of,
)
from tests.support.running import operator_env

VCC_BOT = Path(sys.executable).parent / "vcc-bot"
BOUND = 4.0  # bot.doctor.TIMEOUT: each slow check's bound


def doctor(slack_client: SlackClient, *, user: str = ADMIN, timeout: float = 15.0) -> str:
    """Run `/vcc doctor` and return the text of its one answer."""
    url = slack_client.command("doctor", user=user)
    (answer,) = slack_client.replies(url, timeout=timeout)
    assert answer["response_type"] == "ephemeral"
    return text_of(answer)


def line_of(text: str, check: str) -> str:
    """The answer's line about one check (its fix included, on the line after it)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if f"*{check}*" in line:
            fix = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith(">") else ""
            return f"{line}\n{fix}"
    raise AssertionError(f"no line about {check!r} in:\n{text}")


def vcc_bot_doctor(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VCC_BOT), "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a host that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel completes handshakes; nobody ever reads
        yield listener.getsockname()[1]


# ---- /vcc doctor ----------------------------------------------------------------------


def test_with_everything_fine_every_check_passes(slack_client, browser, bot, slack, salesforce):
    assert link(slack_client, browser, "acme").status_code == 200
    notices_before = len(slack.messages_to(CHANNEL))

    text = doctor(slack_client)

    assert "Everything passed" in text and ":x:" not in text, text
    assert f"{bot.url} answers" in line_of(text, "PUBLIC_URL")
    assert f"{bot.url}/salesforce/callback" in line_of(text, "Callback URL")
    for label in ("Production", "Sandbox"):
        assert "answers" in line_of(text, f"Login host {label}")
        assert "knows the consumer key" in line_of(text, f"Connected app at {label}")
    assert "answers" in line_of(text, "Database")
    assert "acme decrypts" in line_of(text, "Encryption keys")
    assert f"<#{CHANNEL}>" in text and "I am a member" in line_of(text, "Notification channel")
    assert "1 of 5 approvals in use" in line_of(text, "API user vcc-api@acme.example")
    # It learnt about the channel by reading, and posted nothing there.
    assert slack.calls_to("conversations.info")[-1]["channel"] == CHANNEL
    assert len(slack.messages_to(CHANNEL)) == notices_before
    # The token it decrypted is never shown.
    tokens = salesforce.production.issued + salesforce.production.live_access_tokens(
        salesforce.api_user
    )
    assert tokens and not [t for t in tokens if t in text]


def test_a_consumer_key_salesforce_does_not_know_is_named(slack_client, salesforce):
    salesforce.production.client_id = "3MVG9-a-different-connected-app"
    text = doctor(slack_client)
    assert "1 problem to fix" in text
    line = line_of(text, "Connected app at Production")
    assert line.startswith(":x:") and "does not know the consumer key" in line
    assert "SALESFORCE_CLIENT_ID" in line and "Consumer Key" in line
    assert "answers" in line_of(text, "Login host Production")  # the host itself is fine
    assert "knows the consumer key" in line_of(text, "Connected app at Sandbox")


def test_a_wrong_consumer_secret_is_named(slack_client, salesforce):
    salesforce.production.client_secret = "not-the-bots-secret"
    line = line_of(doctor(slack_client), "Connected app at Production")
    assert line.startswith(":x:") and "not with this secret" in line
    assert "SALESFORCE_CLIENT_SECRET" in line and "Consumer Secret" in line


def test_a_callback_url_the_connected_app_does_not_have_says_what_to_enter(
    slack_client, bot, salesforce
):
    salesforce.sandbox.redirect_uri = "https://vcc-bot.example.com/salesforce/callback"
    line = line_of(doctor(slack_client), "Connected app at Sandbox")
    assert line.startswith(":x:") and "redirect_uri_mismatch" in line
    assert f"Callback URL to exactly {bot.url}/salesforce/callback" in line


@pytest.mark.parametrize(
    ("channel_state", "said"),
    [
        ("not_in_channel", "it is private and I am not in it"),
        ("archived", "The channel is archived"),
    ],
)
def test_a_notification_channel_the_bot_cannot_post_in_is_named(
    channel_state, said, slack_client, browser, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    getattr(slack, channel_state).add(CHANNEL)
    text = doctor(slack_client)
    assert "1 problem to fix" in text
    line = line_of(text, "Notification channel")
    assert line.startswith(":x:") and f"<#{CHANNEL}>" in line
    assert said in line and "acme" in line
    assert "/invite @VCC" in line or "/vcc channel ACCOUNT" in line


def test_an_install_without_the_channel_scopes_is_told_to_reinstall(slack_client, browser, slack):
    assert link(slack_client, browser, "acme").status_code == 200
    slack.fail_next("conversations.info", "missing_scope")
    line = line_of(doctor(slack_client), "Notification channel")
    assert line.startswith(":x:") and "channels:read" in line and "Reinstall" in line


def test_an_api_user_counts_its_approvals_up_to_five_of_five(slack_client, browser):
    for n in range(1, 5):
        assert link(slack_client, browser, f"acct{n}").status_code == 200
        browser.cookies.clear()
    line = line_of(doctor(slack_client), "API user vcc-api@acme.example")
    assert "4 of 5 approvals in use" in line and "Full" not in line

    assert link(slack_client, browser, "acct5").status_code == 200
    text = doctor(slack_client)
    line = line_of(text, "API user vcc-api@acme.example")
    assert "5 of 5 approvals in use" in line and "Full" in line
    assert "acct1, acct2, acct3, acct4, acct5" in line
    assert "Everything passed" in text  # a full API user is a fact, not a fault


def test_a_member_who_is_not_an_admin_is_refused(slack_client, salesforce):
    probes = len(salesforce.production.requests)
    text = doctor(slack_client, user=MEMBER)
    assert "Only workspace admins and owners" in text and "run the doctor" in text
    assert "PUBLIC_URL" not in text
    assert len(salesforce.production.requests) == probes  # nothing was checked


def test_a_login_host_on_a_closed_port_is_reported_as_not_answering(settings, slack, salesforce):
    closed = f"http://127.0.0.1:{free_port()}"
    with bot_with(settings, slack, salesforce_sandbox_url=closed) as (_, client):
        text = doctor(client)
    line = line_of(text, "Login host Sandbox")
    assert line.startswith(":x:") and closed in line and "could not be reached" in line
    assert "SALESFORCE_SANDBOX_URL" in line
    assert "did not answer" in line_of(text, "Connected app at Sandbox")
    assert "knows the consumer key" in line_of(text, "Connected app at Production")


def test_a_login_host_that_hangs_holds_the_answer_only_for_the_bound(
    settings, slack, salesforce, silent_port
):
    hanging = f"http://127.0.0.1:{silent_port}"
    with bot_with(settings, slack, salesforce_production_url=hanging) as (_, client):
        started = time.monotonic()
        text = doctor(client, timeout=BOUND + 10)
        took = time.monotonic() - started
    line = line_of(text, "Login host Production")
    assert line.startswith(":x:") and f"did not answer within {BOUND:g} seconds" in line
    assert hanging in line
    # The other checks ran meanwhile, not after it.
    assert "knows the consumer key" in line_of(text, "Connected app at Sandbox")
    assert BOUND - 0.5 < took < BOUND + 4


# ---- many workspaces: only the asking workspace's accounts --------------------------------

ALPHA, BETA = "T0DOCA", "T0DOCB"
ALPHA_ADMIN, BETA_ADMIN = "UDOCA01", "UDOCB01"
ALPHA_CHANNEL, BETA_CHANNEL = "C0ALPHANOTE", "C0BETANOTE"


def install(browser: httpx.Client, running: RunningBot, slack: FakeSlack, team: str, user: str):
    """An admin installs the app from the bot's install link, through Slack's OAuth."""
    slack.approve_installs_as(team, user)
    start = browser.get(f"{running.url}/slack/install")
    at_slack = browser.get(start.headers["location"])
    assert browser.get(at_slack.headers["location"]).status_code == 200


def test_with_many_workspaces_an_admin_sees_only_their_workspace(settings, slack, browser):
    slack.add_workspace(ALPHA, team_name="Alpha")
    slack.add_workspace(BETA, team_name="Beta")
    slack.add_user(ALPHA_ADMIN, is_admin=True, team_id=ALPHA, name="ann")
    slack.add_user(BETA_ADMIN, is_admin=True, team_id=BETA, name="bob")
    many = {
        "slack_bot_token": None,
        "slack_client_id": slack.client_id,
        "slack_client_secret": SecretStr(slack.client_secret),
    }
    with bot_with(settings, slack, **many) as (running, _):
        install(browser, running, slack, ALPHA, ALPHA_ADMIN)
        install(browser, running, slack, BETA, BETA_ADMIN)
        alpha = SlackClient(running, slack, team=ALPHA)
        beta = SlackClient(running, slack, team=BETA)
        try:
            linked = link(alpha, browser, "alpha-acct", user=ALPHA_ADMIN, channel=ALPHA_CHANNEL)
            assert linked.status_code == 200
            browser.cookies.clear()
            linked = link(beta, browser, "beta-acct", user=BETA_ADMIN, channel=BETA_CHANNEL)
            assert linked.status_code == 200
            text = doctor(alpha, user=ALPHA_ADMIN)
        finally:
            alpha.http.close()
            beta.http.close()
    assert "Everything passed" in text, text
    assert f"<#{ALPHA_CHANNEL}>" in text and "alpha-acct" in text
    assert BETA_CHANNEL not in text and "beta-acct" not in text
    # Salesforce counts the API user's approvals in every workspace; Beta's stays unnamed.
    assert "2 of 5 approvals in use" in line_of(text, "API user vcc-api@acme.example")


# ---- vcc-bot doctor ---------------------------------------------------------------------


def test_the_cli_prints_every_check_and_exits_0_when_all_pass(
    tmp_path, settings, slack_client, browser, bot
):
    assert link(slack_client, browser, "acme").status_code == 200
    result = vcc_bot_doctor(tmp_path, operator_env(settings))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("vcc-bot doctor (every workspace): everything passed")
    for check in ("PUBLIC_URL", "Callback URL", "Login host Sandbox", "Database"):
        assert f"ok       {check}" in out
    assert f"ok       Notification channel {CHANNEL}: Notices of VCC account acme" in out
    assert "1 of 5 approvals in use" in out
    assert "Traceback" not in result.stderr


def test_the_cli_exits_1_and_says_what_to_fix_on_a_problem(tmp_path, settings, bot, salesforce):
    salesforce.production.client_id = "3MVG9-a-different-connected-app"
    result = vcc_bot_doctor(tmp_path, operator_env(settings))
    assert result.returncode == 1
    out = result.stdout
    assert "1 problem" in out.splitlines()[0]
    problem = out.split("PROBLEM  Connected app at Production: ", 1)[1]
    assert problem.startswith("Salesforce does not know the consumer key")
    assert "Fix: In Salesforce Setup" in problem and "SALESFORCE_CLIENT_ID" in problem


def test_the_cli_reports_a_database_that_does_not_answer(tmp_path, settings, bot):
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/vcc"
    result = vcc_bot_doctor(tmp_path, operator_env(settings, DATABASE_URL=nowhere))
    assert result.returncode == 1
    assert "PROBLEM  Database: The database did not answer" in result.stdout
    assert "Fix: Check DATABASE_URL" in result.stdout
    assert "ok       Login host Production" in result.stdout  # the rest still ran
    assert "Traceback" not in result.stderr


# ---- what the doctor relies on in the fakes (each a claim about the real service) ----------


def token_answer(fake: FakeSalesforce, **form: str) -> dict[str, Any]:
    base = {
        "grant_type": "authorization_code",
        "code": "never-issued",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": "http://127.0.0.1:9/salesforce/callback",
        "code_verifier": "v" * 43,
    }
    response = httpx.post(f"{fake.url}/services/oauth2/token", data=base | form, timeout=5)
    assert response.status_code == 400
    return response.json()


def test_fake_salesforce_authenticates_the_client_then_the_callback_then_the_code():
    with FakeSalesforce(
        CLIENT_ID, CLIENT_SECRET, redirect_uri="http://127.0.0.1:9/salesforce/callback"
    ) as fake:
        assert token_answer(fake)["error"] == "invalid_grant"
        assert token_answer(fake, client_id="other", redirect_uri="http://x/cb") == {
            "error": "invalid_client_id",
            "error_description": "client identifier invalid",
        }
        assert token_answer(fake, client_secret="other", redirect_uri="http://x/cb") == {
            "error": "invalid_client",
            "error_description": "invalid client credentials",
        }
        assert token_answer(fake, redirect_uri="http://x/cb") == {
            "error": "redirect_uri_mismatch",
            "error_description": "redirect_uri must match configuration",
        }


def test_fake_slack_conversations_info_tells_membership_and_needs_channels_read(slack):
    def info(channel: str, token: str = slack.bot_token) -> dict[str, Any]:
        response = httpx.post(
            f"{slack.api_url}conversations.info",
            data={"channel": channel},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        return response.json()

    member = info("C0MEMBER")["channel"]
    assert (member["is_member"], member["is_private"], member["is_archived"]) == (
        True,
        False,
        False,
    )
    slack.archived.add("C0OLD")
    assert info("C0OLD")["channel"]["is_archived"] is True
    slack.not_in_channel.add("C0SECRET")
    assert info("C0SECRET") == {"ok": False, "error": "channel_not_found"}
    slack.add_workspace("T0NARROW")
    slack.add_user("UNARROW1", is_admin=True, team_id="T0NARROW")
    narrow = slack.install("T0NARROW", "UNARROW1", scope="commands,chat:write")["access_token"]
    refused = info("C0MEMBER", token=narrow)
    assert refused["error"] == "missing_scope" and refused["needed"] == "channels:read"


# ---- the report as Slack shows it ----------------------------------------------------------


def test_the_report_keeps_within_slacks_limits_and_shows_outside_values_inert():
    hostile = "<!channel> *bold* & `code`"
    findings = [Finding(f"API user {hostile}", True, "d" * 4000)] + [
        Finding("Notification channel", False, hostile * 40, "fix " * 800, channel=f"C{n:08d}")
        for n in range(300)
    ]
    posted = blocks.doctor_report(DoctorReport(findings, "T0001")).kwargs()
    assert posted["text"] == "vcc-bot doctor: 300 problems to fix"
    assert len(posted["blocks"]) <= 50
    texts = [
        t["text"]
        for b in posted["blocks"]
        for t in [b.get("text"), *b.get("elements", [])]
        if isinstance(t, dict)
    ]
    assert texts and all(len(t) <= 3000 for t in texts)
    assert not [t for t in texts if "<!channel>" in t]
    assert "`vcc-bot doctor` prints every check" in texts[-1]
