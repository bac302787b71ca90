"""Hostile input: what an attacker, a link scanner or an odd Salesforce sends the bot.

Each test is named after a defect found by trying the bot as an attacker would; rows of the
hostile-input table are noted beside them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlmodel import select

from bot import ids
from bot.config import SettingsError, load_settings
from storage import repository as repo
from storage.models import AuditEvent
from tests.support import (
    ADMIN,
    CHANNEL,
    TEAM,
    DatabaseHold,
    bot_with,
    link,
    open_login,
    start_link,
    text_of,
    through_salesforce,
)


def audit(bot: Any, kind: str) -> list[Any]:
    with bot.runtime.db.transaction(write=False) as session:
        return [e for e in session.exec(select(AuditEvent)).all() if e.event == kind]


def linked_status(bot: Any, account: str = "acme") -> str | None:
    with bot.runtime.db.transaction(write=False) as session:
        row = repo.get_account(session, team_id=TEAM, account_id=account)
        return None if row is None else row.status


# ---- row 4: My Domain values are validated whole ----------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "https://acme.my.salesforce.com\n/",
        "acme.my.salesforce.com\n",
        "acme.my.salesforce.com\x00",
        "acme.my.sales\u200bforce.com",
        "acme\t.my.salesforce.com",
        "acme.my.salesforce.com\r\nX-Injected: 1",
    ],
)
def test_a_my_domain_with_a_line_break_or_control_character_is_refused_in_the_modal(
    value, slack_client, slack, database_url
):
    if not database_url.startswith("sqlite"):
        pytest.skip("input validation, not storage: once is enough")
    url = slack_client.click(ids.LINK_CUSTOM, "acme")
    modal = slack.wait_for(lambda: slack.opened_views)[0]
    response = slack_client.submit_view(
        modal["view"], {ids.MY_DOMAIN_BLOCK: {ids.MY_DOMAIN_INPUT: value}}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["response_action"] == "errors"
    assert "line break or another control character" in body["errors"][ids.MY_DOMAIN_BLOCK]
    assert slack.dms_to(ADMIN) == []
    assert slack.responses(url) == []


# ---- row 9: a browser secret is always minted by the bot --------------------------------


def test_a_browser_cookie_chosen_by_the_client_is_never_adopted(slack_client, bot, browser):
    start = start_link(slack_client, "acme")
    chosen = "attacker-chosen-browser-secret-0123456789"
    browser.cookies.set("vcc_browser", chosen, domain="127.0.0.1", path="/salesforce/")
    answer = open_login(browser, start.login_url)
    assert answer.status_code == 303
    issued = answer.cookies.get("vcc_browser")
    assert issued and issued != chosen
    # The attacker's copy of the cookie does not complete the login.
    to_salesforce = browser.get(answer.headers["location"])
    callback = to_salesforce.headers["location"]
    with httpx.Client(timeout=10, cookies={"vcc_browser": chosen}) as attacker:
        page = attacker.get(callback)
    assert page.status_code == 403 and "another browser" in page.text


# ---- row 10: opening a login link changes nothing ---------------------------------------


def test_a_link_scanner_fetching_the_login_link_does_not_use_it_up(slack_client, bot, browser):
    start = start_link(slack_client, "acme")
    with httpx.Client(timeout=10) as scanner:  # mail and chat security tools fetch links
        assert scanner.head(start.login_url).status_code == 200
        looked = scanner.get(start.login_url)
    assert looked.status_code == 200 and "set-cookie" not in looked.headers
    assert 'method="post"' in looked.text and "Continue to Salesforce" in looked.text
    assert "form-action 'self' " in looked.headers["content-security-policy"]
    # The admin's own click still works, and the link is then theirs.
    answer = open_login(browser, start.login_url)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(bot.settings.salesforce_production_url)


@pytest.mark.parametrize("sent_origin", [None, "https://evil.example", "null"])
def test_binding_a_login_link_needs_a_post_from_its_own_page(
    sent_origin, slack_client, bot, browser
):
    start = start_link(slack_client, "acme")
    headers = {} if sent_origin is None else {"Origin": sent_origin}
    forged = browser.post(start.login_url, headers=headers)
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    # Nothing was bound: the admin's click goes through.
    assert open_login(browser, start.login_url).status_code == 303


# ---- row 11: odd Salesforce answers ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/id/", "<html><body>Maintenance</body></html>"),
        ("/id/", "[1, 2, 3]"),
        ("/services/data/", "<html><body>Login</body></html>"),
        ("/services/oauth2/token", "<html><body>Please wait</body></html>"),
    ],
    ids=["identity-html", "identity-list", "query-html", "token-html"],
)
def test_an_odd_salesforce_answer_is_said_plainly_revoked_and_audited(
    path, body, slack_client, browser, bot, salesforce, slack
):
    sf = salesforce.production
    sf.fail_next(path, 200, body)
    page = link(slack_client, browser, "acme")
    assert page.status_code == 400, page.text
    assert "Salesforce did not answer as expected" in page.text
    dm = slack.wait_for(lambda: [m for m in slack.dms_to(ADMIN) if "as expected" in text_of(m)])
    assert "did not answer as expected" in text_of(dm[-1])
    assert sf.live_refresh_tokens(salesforce.api_user) == []  # revoked, or never issued
    refused = audit(bot, "link_refused")
    assert len(refused) == 1
    assert refused[0].detail.startswith("Salesforce refused: unexpected_answer")
    assert linked_status(bot) is None


def test_an_odd_identity_answer_during_a_check_is_could_not_check(
    slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.production.fail_next("/id/", 200, "<html>Maintenance</html>")
    reply = slack_client.replies(slack_client.command("status acme"))[-1]
    assert "Could not check" in text_of(reply) and "as expected" in text_of(reply)
    assert [m for m in slack.messages_to(CHANNEL) if "is broken" in text_of(m)] == []


# ---- row 12: instance_url and id are not trusted as sent -----------------------------------


@pytest.mark.parametrize(
    "override",
    [
        {"instance_url": "https://evil.example"},
        {"instance_url": "http://acme.my.salesforce.com"},
        {"instance_url": "https://salesforce.com.evil.example"},
        {"id": "https://evil.example/id/00D000000000001AAA/005000000000001AAA"},
    ],
    ids=["foreign-instance", "plain-http-instance", "lookalike-instance", "foreign-id"],
)
def test_a_token_response_pointing_away_from_salesforce_is_refused_and_revoked(
    override, slack_client, browser, bot, salesforce
):
    sf = salesforce.production
    sf.token_overrides = override
    page = link(slack_client, browser, "acme")
    assert page.status_code == 400
    assert "could not be verified" in page.text
    assert sf.issued and sf.issued[-1] in sf.revoked
    # The access token was never sent anywhere but the login host.
    assert [r.path for r in sf.requests if r.path.startswith(("/id/", "/services/data"))] == []
    assert linked_status(bot) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("public_url", "http://vcc-bot.example.com"),
        ("salesforce_production_url", "http://login.salesforce.com"),
        ("salesforce_sandbox_url", "http://test.salesforce.com"),
        ("slack_api_url", "http://slack.com/api/"),
    ],
)
def test_plain_http_urls_are_refused_except_on_this_machine(name, value, settings):
    values = {k: v for k, v in settings.model_dump().items() if v is not None}
    values = {k: getattr(v, "get_secret_value", lambda v=v: v)() for k, v in values.items()}
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, **{**values, name: value})
    assert "https" in str(refused.value) and name.upper() in str(refused.value)
    # Loopback stays allowed for development (the whole suite runs that way).
    loopback = value.replace(urlsplit(value).netloc, "localhost:8080")
    load_settings(_env_file=None, **{**values, name: loopback})


def test_the_continue_page_names_the_account_and_stays_self_contained(slack_client, bot):
    start = start_link(slack_client, "acme")
    page = httpx.get(start.login_url, timeout=10)
    assert "Link VCC account acme" in page.text and "directly as the API user" in page.text
    assert "<script" not in page.text and "http" not in page.text.split("<body>")[1]
    assert page.headers["x-frame-options"] == "DENY"


# ---- row 14: a locked table is a clear "try again", and no token stays live ----------------


def test_a_locked_table_times_out_with_try_again_and_leaves_no_live_token(
    settings, slack, salesforce, browser
):
    sf = salesforce.production
    hold = DatabaseHold(settings.database_url)
    with bot_with(settings, slack, database_timeout=1.0) as (_, client):
        start = start_link(client, "acme")

        def lock_while_identity_is_read(req: Any) -> None:
            # The new token is recorded as pending by now; storing the link will wait.
            if req.path.startswith("/id/"):
                hold.take()

        sf.on_request = lock_while_identity_is_read
        try:
            page = through_salesforce(browser, start.login_url)
        finally:
            sf.on_request = None
            hold.release()
        assert page.status_code == 503 and "Try again in a minute" in page.text
        token = sf.issued[-1]
        assert token in sf.revoked and token not in sf.live_refresh_tokens(salesforce.api_user)
        assert linked_status(client.bot) is None


# ---- the original fault table, kept under names of their own -------------------------------


def test_a_token_endpoint_that_hangs_is_salesforce_not_answering(
    slack_client, browser, bot, salesforce, database_url
):
    if not database_url.startswith("sqlite"):
        pytest.skip("about timing, not storage: once is enough")
    salesforce.production.slow_next(lambda r: r.path == "/services/oauth2/token", 15.0)
    with httpx.Client(timeout=30) as patient:  # the bot gives up after its 10 s timeout
        page = link(slack_client, patient, "acme")
    assert page.status_code == 400 and "Salesforce is not answering" in page.text
    assert linked_status(bot) is None


@pytest.mark.parametrize(
    ("description", "reason"),
    [
        ("expired access/refresh token", "revoked or has expired"),
        ("IP restricted or invalid login hours", "IP restricted or invalid login hours"),
        ("token validity expired", "revoked or has expired"),
    ],
)
def test_invalid_grant_in_its_variants_is_broken_with_its_reason(
    description, reason, slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    salesforce.production.fail_next(
        "/services/oauth2/token",
        400,
        {"error": "invalid_grant", "error_description": description},
    )
    body = text_of(slack_client.replies(slack_client.command("status acme"))[-1])
    assert "Broken" in body and reason in body
    notices = slack.wait_for(
        lambda: [m for m in slack.messages_to(CHANNEL) if "is broken" in text_of(m)]
    )
    assert len(notices) == 1 and reason in text_of(notices[0])
