"""`/vcc link` through the login DM, Salesforce and the callback, as an admin does it."""

from __future__ import annotations

import base64
import hashlib

from bot import ids
from storage import repository as repo
from storage.models import LinkStatus
from tests.support import (
    ADMIN,
    CHANNEL,
    CLIENT_ID,
    buttons,
    link,
    open_login,
    query_of,
    start_link,
    text_of,
    through_salesforce,
)


def test_link_prompt_explains_and_offers_both_environments(slack_client):
    url = slack_client.command("link acme-uk.1")
    prompt = slack_client.replies(url)[0]
    assert prompt["response_type"] == "ephemeral"
    assert "acme-uk.1" in text_of(prompt)
    assert "create a task at the end of every call" in text_of(prompt)
    found = buttons(prompt)
    assert found[ids.LINK_PRODUCTION]["text"]["text"] == "Production"
    assert found[ids.LINK_SANDBOX]["text"]["text"] == "Sandbox"
    assert found[ids.LINK_PRODUCTION]["value"] == "acme-uk.1"


def test_without_account_the_command_acts_on_default(slack_client):
    prompt = slack_client.replies(slack_client.command("link"))[0]
    assert buttons(prompt)[ids.LINK_SANDBOX]["value"] == "default"


def test_clicking_production_replaces_buttons_and_dms_a_login_link(slack_client, bot):
    start = start_link(slack_client, "acme")
    assert "Check your DMs" in text_of(start.check_dms)
    assert start.check_dms["replace_original"] is True
    assert buttons(start.check_dms) == {}
    dm = text_of(start.dm)
    assert "directly as the Salesforce API user" in dm
    assert "Log in as another user" in dm
    assert "10 minutes" in dm
    for need in (
        "API Enabled",
        "Edit Tasks",
        "View All Users",
        "View All Data",
        "Modify All Data",
        "API Only",
    ):
        assert need in dm
    assert start.login_url.startswith(f"{bot.url}/salesforce/login/")


def test_login_link_binds_browser_and_redirects_to_salesforce_with_pkce(
    slack_client, browser, salesforce, settings
):
    start = start_link(slack_client, "acme")
    response = open_login(browser, start.login_url)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(salesforce.production.url + "/services/oauth2/authorize?")
    q = query_of(location)
    assert q["response_type"] == "code"
    assert q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == settings.public_url + "/salesforce/callback"
    assert q["scope"] == "api refresh_token id"
    assert q["prompt"] == "login"
    assert q["code_challenge_method"] == "S256"
    assert len(base64.urlsafe_b64decode(q["state"] + "==")) >= 16  # at least 128 bits
    assert len(q["code_challenge"]) == 43  # base64url SHA-256, no padding
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "secure" not in cookie  # PUBLIC_URL is http here
    assert "max-age=600" in cookie


def test_sandbox_goes_to_the_sandbox_host(slack_client, browser, salesforce):
    start = start_link(slack_client, "uat", environment="sandbox")
    response = open_login(browser, start.login_url)
    assert response.headers["location"].startswith(salesforce.sandbox.url + "/services/oauth2/")
    final = through_salesforce(browser, start.login_url)
    assert final.status_code == 200, final.text
    token_calls = [r for r in salesforce.sandbox.requests if r.path.endswith("/token")]
    assert token_calls and not [
        r for r in salesforce.production.requests if r.path.endswith("/token")
    ]


def test_full_link_records_everything_and_tells_everyone(
    slack_client, browser, salesforce, slack, bot
):
    page = link(slack_client, browser, "acme")
    assert page.status_code == 200
    assert "Linked — you can close this window" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")

    # The PKCE verifier sent with the code matches the challenge sent to authorize.
    authorize = salesforce.production.authorize_requests[-1]
    exchange = next(r for r in salesforce.production.requests if r.path.endswith("/token"))
    verifier = exchange.form["code_verifier"]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == authorize["code_challenge"]

    with bot.runtime.db.transaction() as session:
        account = repo.get_account(session, team_id="T0001", account_id="acme")
    assert account.status == LinkStatus.LINKED
    assert account.environment == "production"
    assert account.login_host == salesforce.production.url
    assert account.instance_url == salesforce.production.url
    assert account.org_id == salesforce.api_user.org_id
    assert account.sf_user_id == salesforce.api_user.user_id
    assert account.sf_username == "vcc-api@acme.example"
    assert account.linked_by == ADMIN and account.linked_at is not None
    assert account.notify_channel == CHANNEL
    live = salesforce.production.live_refresh_tokens(salesforce.api_user)
    assert len(live) == 1
    # Stored encrypted: neither the refresh nor the access token appears in the row.
    assert live[0] not in account.refresh_token_encrypted
    row_text = " ".join(str(v) for v in account.model_dump().values())
    for token in salesforce.production.live_access_tokens(salesforce.api_user):
        assert token not in row_text

    dm = slack.wait_for(lambda: [m for m in slack.dms_to(ADMIN) if "Linked." in text_of(m)])
    assert "vcc-api@acme.example" in text_of(dm[0])
    notice = slack.wait_for(lambda: slack.messages_to(CHANNEL))
    body = text_of(notice[0])
    for part in ("acme", salesforce.api_user.org_id, "Production", "vcc-api@acme.example"):
        assert part in body


def test_relink_stores_new_link_then_revokes_the_old_token(slack_client, browser, salesforce, bot):
    assert link(slack_client, browser, "acme").status_code == 200
    first = salesforce.production.live_refresh_tokens(salesforce.api_user)
    prompt = slack_client.replies(slack_client.command("link acme"))[0]
    assert "already *Linked*" in text_of(prompt)
    assert "vcc-api@acme.example" in text_of(prompt)
    assert "Production" in text_of(prompt)
    assert link(slack_client, browser, "acme").status_code == 200
    live = salesforce.production.live_refresh_tokens(salesforce.api_user)
    assert len(live) == 1 and live != first
    assert first[0] in salesforce.production.revoked


def test_a_link_survives_a_restart(slack_client, browser, salesforce, bot, slack):
    assert link(slack_client, browser, "acme").status_code == 200
    bot.restart()
    url = slack_client.command("status acme")
    final = slack_client.replies(url)[-1]
    assert "Linked" in text_of(final)
    assert "the link works" in text_of(final)


def test_restart_between_dm_and_callback_still_links(slack_client, browser, bot):
    start = start_link(slack_client, "acme")
    bot.restart()
    assert through_salesforce(browser, start.login_url).status_code == 200
