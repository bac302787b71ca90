"""Every way the Salesforce callback can fail: a clear page, a DM, nothing stored, no live token."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from storage import repository as repo
from tests.support import ADMIN, CHANNEL, link, open_login, start_link, text_of


def stored(bot, account: str = "acme"):
    with bot.runtime.db.transaction() as session:
        return repo.get_account(session, team_id="T0001", account_id=account)


def dm_containing(slack, words: str) -> str:
    found = slack.wait_for(lambda: [m for m in slack.dms_to(ADMIN) if words in text_of(m)])
    return text_of(found[-1])


def token_requests(fake):
    return [r for r in fake.requests if r.path == "/services/oauth2/token"]


@pytest.mark.parametrize("spelling", ["access_denied", "access-denied"])
def test_deny_on_salesforce_cancels_and_stores_nothing(
    spelling, slack_client, browser, salesforce, slack, bot
):
    salesforce.production.authorize_error = spelling
    page = link(slack_client, browser, "acme")
    assert page.status_code == 400
    assert "Linking cancelled" in page.text
    assert "did not allow access" in dm_containing(slack, "Linking cancelled")
    assert stored(bot) is None
    assert token_requests(salesforce.production) == []
    assert slack.messages_to(CHANNEL) == []


def test_other_authorize_errors_are_explained(slack_client, browser, salesforce, slack, bot):
    salesforce.production.authorize_error = "invalid_scope"
    salesforce.production.authorize_error_description = "the requested scope is not allowed"
    page = link(slack_client, browser, "acme")
    assert page.status_code == 400
    assert "Salesforce refused the login" in page.text
    assert "invalid_scope" in page.text
    assert "the requested scope is not allowed" in dm_containing(slack, "refused the login")
    assert stored(bot) is None


def test_a_state_works_once(slack_client, browser, salesforce, bot):
    start = start_link(slack_client, "acme")
    first = open_login(browser, start.login_url)
    callback = browser.get(first.headers["location"]).headers["location"]
    assert browser.get(callback).status_code == 200
    replay = browser.get(callback)
    assert replay.status_code == 409
    assert "already used" in replay.text
    assert len(token_requests(salesforce.production)) == 1


def test_an_expired_state_is_refused_before_any_exchange(slack_client, browser, salesforce, bot):
    start = start_link(slack_client, "acme")
    first = open_login(browser, start.login_url)
    callback = browser.get(first.headers["location"]).headers["location"]
    with bot.runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE login_attempt SET expires_at = '2000-01-01 00:00:00'"))
    page = browser.get(callback)
    assert page.status_code == 410
    assert "expired" in page.text
    assert token_requests(salesforce.production) == []
    assert stored(bot) is None


def test_the_callback_must_come_back_to_the_browser_that_opened_the_link(
    slack_client, browser, salesforce, bot
):
    start = start_link(slack_client, "acme")
    first = open_login(browser, start.login_url)
    callback = browser.get(first.headers["location"]).headers["location"]
    with httpx.Client() as stranger:
        page = stranger.get(callback)
    assert page.status_code == 403
    assert "another browser" in page.text
    assert token_requests(salesforce.production) == []
    # The stranger consumed nothing: the admin's own browser still completes.
    assert browser.get(callback).status_code == 200
    assert stored(bot).status == "Linked"


def test_a_refused_code_exchange_stores_nothing(slack_client, browser, salesforce, slack, bot):
    salesforce.production.fail_next(
        "/services/oauth2/token",
        400,
        {"error": "invalid_grant", "error_description": "authentication failure"},
    )
    page = link(slack_client, browser, "acme")
    assert page.status_code == 400
    assert "invalid_grant" in page.text
    assert "authentication failure" in dm_containing(slack, "refused the login")
    assert stored(bot) is None


@pytest.mark.parametrize("status", [503, 0])
def test_salesforce_down_during_exchange_says_try_again(
    status, slack_client, browser, salesforce, slack, bot
):
    salesforce.production.fail_next("/services/oauth2/token", status)
    page = link(slack_client, browser, "acme")
    assert page.status_code == 400
    assert "not answering" in page.text
    assert "try again" in dm_containing(slack, "not answering")
    assert stored(bot) is None


def test_a_forged_signature_is_refused_and_its_token_revoked(
    slack_client, browser, salesforce, slack, bot
):
    salesforce.production.tamper_signature = True
    page = link(slack_client, browser, "acme")
    assert "could not be verified" in page.text
    assert stored(bot) is None
    assert salesforce.production.live_refresh_tokens(salesforce.api_user) == []
    assert salesforce.production.revoked


def test_missing_required_permissions_are_named_and_the_token_revoked(
    slack_client, browser, salesforce, slack, bot
):
    salesforce.api_user.permissions["PermissionsEditTask"] = False
    salesforce.api_user.permissions["PermissionsApiEnabled"] = False
    page = link(slack_client, browser, "acme")
    assert page.status_code == 400
    assert "API Enabled, Edit Tasks" in page.text
    dm = dm_containing(slack, "Permissions missing")
    assert "Edit Tasks" in dm and "create a task at the end of every call" in dm
    assert stored(bot) is None
    assert salesforce.production.live_refresh_tokens(salesforce.api_user) == []


def test_missing_recommended_permissions_link_with_a_warning(
    slack_client, browser, salesforce, slack, bot
):
    salesforce.api_user.permissions["PermissionsViewAllData"] = False
    salesforce.api_user.permissions["PermissionsApiUserOnly"] = False
    assert link(slack_client, browser, "acme").status_code == 200
    dm = dm_containing(slack, "Linked.")
    assert "API Only User" in dm and "View All Data" in dm
    status = slack_client.replies(slack_client.command("status acme"))[-1]
    assert "View All Data" in text_of(status)


def test_a_permission_the_org_cannot_query_is_reported_unchecked(
    slack_client, browser, salesforce, slack, bot
):
    salesforce.production.unsupported_fields = {"PermissionsApiUserOnly"}
    assert link(slack_client, browser, "acme").status_code == 200
    assert "API Only User" in dm_containing(slack, "would not let me check")


def test_identity_failure_revokes_the_new_token(slack_client, browser, salesforce, slack, bot):
    salesforce.production.fail_next("/id/", 503)
    page = link(slack_client, browser, "acme")
    assert "not answering" in page.text
    assert stored(bot) is None
    assert salesforce.production.live_refresh_tokens(salesforce.api_user) == []


def test_a_sixth_vcc_account_for_one_api_user_is_refused(
    slack_client, browser, salesforce, slack, bot
):
    for n in range(1, 6):
        assert link(slack_client, browser, f"acct-{n}").status_code == 200
    page = link(slack_client, browser, "acct-6")
    assert page.status_code == 400
    assert "at most five" in page.text
    dm = dm_containing(slack, "five times")
    assert "Create another API user" in dm
    assert "acct-1" in dm
    assert stored(bot, "acct-6") is None
    # The refused token is revoked at once, not left as a sixth approval.
    last = salesforce.production.revoked[-1]
    assert last not in salesforce.production.live_refresh_tokens(salesforce.api_user)
    # Relinking one of the five does not count twice.
    assert link(slack_client, browser, "acct-3").status_code == 200
