"""Salesforce's five-approvals limit, tokens kept at the host that issued them, custom domains."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest

from bot import ids
from storage import repository as repo
from tests.support import (
    ADMIN,
    CHANNEL,
    TEAM,
    RunningBot,
    SlackClient,
    buttons,
    link,
    open_login,
    start_link,
    text_of,
    wait_until,
)


def stored(bot, account: str = "acme"):
    with bot.runtime.db.transaction() as session:
        return repo.get_account(session, team_id=TEAM, account_id=account)


def last_status(slack_client, account: str = "acme") -> str:
    return text_of(slack_client.replies(slack_client.command(f"status {account}"))[-1])


# ---- 2. Salesforce's five approvals ------------------------------------------------------


def test_a_refused_sixth_approval_finds_and_reports_the_link_it_cost(
    slack_client, browser, salesforce, slack, bot
):
    for n in range(1, 6):
        assert link(slack_client, browser, f"acct-{n}").status_code == 200
    # Each link re-checks the API user's other links; let those settle first.
    wait_until(lambda: not bot.runtime.background.busy, 10, "the re-checks after linking")
    oldest = salesforce.production.issued[0]

    page = link(slack_client, browser, "acct-6")
    assert "at most five" in page.text
    # Salesforce counted the sixth approval anyway and dropped the oldest token.
    assert oldest in salesforce.production.evicted

    # The re-check of the API user's links runs once the refusal is answered.
    wait_until(
        lambda: "sixth connection" in (stored(bot, "acct-1").health_reason or ""),
        10,
        "acct-1 found broken by the sixth approval",
    )
    assert stored(bot, "acct-1").health == "broken"
    for n in range(2, 6):
        assert stored(bot, f"acct-{n}").health == "healthy"
    notice = slack.wait_for(
        lambda: [m for m in slack.messages_to(CHANNEL) if "is broken" in text_of(m)]
    )
    assert len(notice) == 1
    assert "acct-1" in text_of(notice[0]) and "another API user" in text_of(notice[0])
    refusal = [m for m in slack.dms_to(ADMIN) if "five times" in text_of(m)]
    assert "may have revoked" in text_of(refusal[-1])
    warning = slack.wait_for(
        lambda: [m for m in slack.dms_to(ADMIN) if "revoked the oldest link" in text_of(m)]
    )
    assert "acct-1" in text_of(warning[0])
    assert "sixth connection" in last_status(slack_client, "acct-1")


# ---- 3. the host that issued the token ---------------------------------------------------


def test_a_refresh_without_a_new_token_keeps_the_stored_one(slack_client, browser, salesforce, bot):
    assert link(slack_client, browser, "acme").status_code == 200
    before = stored(bot).refresh_token_encrypted
    assert "the link works" in last_status(slack_client)
    assert stored(bot).refresh_token_encrypted == before
    assert "the link works" in last_status(slack_client)


def test_a_rotated_refresh_token_replaces_the_stored_one(slack_client, browser, salesforce, bot):
    assert link(slack_client, browser, "acme").status_code == 200
    before = stored(bot).refresh_token_encrypted
    salesforce.production.rotate_refresh_tokens = True
    assert "the link works" in last_status(slack_client)
    assert stored(bot).refresh_token_encrypted != before
    # The old token is gone at Salesforce; only the stored new one keeps the link alive.
    assert "the link works" in last_status(slack_client)


def test_a_sandbox_link_is_refreshed_and_revoked_at_the_sandbox_host(
    slack_client, browser, salesforce, bot
):
    assert link(slack_client, browser, "uat", environment="sandbox").status_code == 200
    assert "the link works" in last_status(slack_client, "uat")
    slack_client.replies(slack_client.click(ids.UNLINK_CONFIRM, "uat"))
    sandbox_paths = [r.path for r in salesforce.sandbox.requests]
    assert "/services/oauth2/revoke" in sandbox_paths
    production_oauth = [r.path for r in salesforce.production.requests if "oauth2" in r.path]
    assert production_oauth == []


# ---- 3. custom domains -------------------------------------------------------------------


class MyDomainRouter(httpx2.AsyncBaseTransport):
    """Sends *.my.salesforce.com to a fake on loopback: there is no DNS or TLS here."""

    def __init__(self) -> None:
        self.target: httpx2.URL | None = None
        self.calls: list[tuple[str, str]] = []  # (host, path) of each routed request
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host.endswith(".my.salesforce.com"):
            assert self.target is not None
            self.calls.append((request.url.host, request.url.path))
            request.url = request.url.copy_with(
                scheme=self.target.scheme, host=self.target.host, port=self.target.port
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass  # shared by every client the bot makes; lives as long as the test


def oauth_calls(router: MyDomainRouter) -> list[tuple[str, str]]:
    return [(h, p) for h, p in router.calls if p.startswith("/services/oauth2/")]


@pytest.fixture
def router():
    return MyDomainRouter()


@pytest.fixture
def domain_bot(settings, salesforce, router):
    router.target = httpx2.URL(salesforce.production.url)
    running = RunningBot(settings, salesforce_transport=router).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def domain_client(domain_bot, slack):
    client = SlackClient(domain_bot, slack)
    yield client
    client.http.close()


def open_custom_domain_modal(client, slack) -> dict:
    prompt = client.replies(client.command("link acme"))[0]
    assert buttons(prompt)[ids.LINK_CUSTOM]["text"]["text"] == "Custom domain"
    before = len(slack.opened_views)
    url = client.click(ids.LINK_CUSTOM, "acme")
    # The click's 200 comes before the modal opens: wait for this click's modal.
    opened = slack.wait_for(lambda: len(slack.opened_views) > before and slack.opened_views)
    return {"view": opened[-1]["view"], "response_url": url}


def submit_domain(client, view: dict, host: str) -> httpx.Response:
    return client.submit_view(view, {ids.MY_DOMAIN_BLOCK: {ids.MY_DOMAIN_INPUT: host}})


@pytest.mark.parametrize(
    "host",
    [
        "login.salesforce.com",
        "acme.example.com",
        "acme.my.salesforce.com.evil.example",
        "https://acme.my.salesforce.com/path",
        "acme my.salesforce.com",
    ],
)
def test_a_host_that_is_not_a_my_domain_is_refused_in_the_modal(
    host, domain_client, slack, database_url
):
    if not database_url.startswith("sqlite"):
        pytest.skip("input validation, not storage: once is enough")
    modal = open_custom_domain_modal(domain_client, slack)
    response = submit_domain(domain_client, modal["view"], host)
    assert response.status_code == 200
    body = response.json()
    assert body["response_action"] == "errors"
    assert "My Domain" in body["errors"][ids.MY_DOMAIN_BLOCK]
    assert slack.dms_to(ADMIN) == []


def test_linking_through_a_custom_domain(
    domain_client, slack, salesforce, browser, router, domain_bot
):
    # An org behind My Domain names its My Domain as instance and identity host.
    user = salesforce.api_user
    salesforce.production.token_overrides = {
        "instance_url": "https://acme.my.salesforce.com",
        "id": f"https://acme.my.salesforce.com/id/{user.org_id}/{user.user_id}",
    }
    modal = open_custom_domain_modal(domain_client, slack)
    assert (
        submit_domain(domain_client, modal["view"], " https://Acme.my.salesforce.com/ ").text == ""
    )
    assert "Check your DMs" in text_of(domain_client.replies(modal["response_url"])[0])
    dm = slack.wait_for(lambda: slack.dms_to(ADMIN))[0]
    assert "Custom domain" in text_of(dm)

    first = open_login(browser, buttons(dm)[ids.LOGIN_OPEN]["url"])
    authorize = urlsplit(first.headers["location"])
    assert (authorize.scheme, authorize.netloc) == ("https", "acme.my.salesforce.com")
    # The browser cannot reach acme.my.salesforce.com here: ask the fake with the same query.
    at_salesforce = browser.get(f"{salesforce.production.url}{authorize.path}?{authorize.query}")
    page = browser.get(at_salesforce.headers["location"])
    assert page.status_code == 200, page.text
    # The code exchange went to the My Domain, and so did the calls to its instance.
    acme = "acme.my.salesforce.com"
    assert oauth_calls(router) == [(acme, "/services/oauth2/token")]
    assert {host for host, _ in router.calls} == {acme} and len(router.calls) == 3

    account = stored(domain_bot)
    assert account.environment == "custom"
    assert account.login_host == "https://acme.my.salesforce.com"
    assert "the link works" in last_status(domain_client)
    domain_client.replies(domain_client.click(ids.UNLINK_CONFIRM, "acme"))
    assert oauth_calls(router) == [  # exchange, refresh, revoke: all at the issuing host
        (acme, "/services/oauth2/token"),
        (acme, "/services/oauth2/token"),
        (acme, "/services/oauth2/revoke"),
    ]


def test_a_sandbox_my_domain_is_accepted(domain_client, slack, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("input validation, not storage: once is enough")
    modal = open_custom_domain_modal(domain_client, slack)
    response = submit_domain(domain_client, modal["view"], "acme--uat.sandbox.my.salesforce.com")
    assert response.text == ""
    meta = json.loads(modal["view"]["private_metadata"])
    assert meta["account"] == "acme"
    slack.wait_for(lambda: slack.dms_to(ADMIN))


def test_a_member_cannot_open_or_submit_the_custom_domain_modal(domain_client, slack):
    # Not yet known as a member: the modal opens at once (its trigger lasts 3 seconds),
    # and the member is told they may not link.
    url = domain_client.click(ids.LINK_CUSTOM, "acme", user="UMEMBER1")
    assert "Only workspace admins" in text_of(domain_client.replies(url)[0])
    assert len(slack.opened_views) == 1
    # Known as a member (cached): refused without a modal.
    again = domain_client.click(ids.LINK_CUSTOM, "acme", user="UMEMBER1")
    assert "Only workspace admins" in text_of(domain_client.replies(again)[0])
    assert len(slack.opened_views) == 1
    # A forged submission (a modal opened by an admin, submitted by someone else) is refused.
    modal = open_custom_domain_modal(domain_client, slack)
    response = domain_client.submit_view(
        modal["view"],
        {ids.MY_DOMAIN_BLOCK: {ids.MY_DOMAIN_INPUT: "acme.my.salesforce.com"}},
        user="UMEMBER1",
    )
    assert response.status_code == 200
    assert "Only workspace admins" in text_of(domain_client.replies(modal["response_url"])[0])
    assert slack.dms_to("UMEMBER1") == [] and slack.dms_to(ADMIN) == []


def test_start_link_offers_three_environments(slack_client):
    start = start_link(slack_client, "acme")
    assert start.login_url
    prompt = slack_client.replies(slack_client.command("link other"))[0]
    assert set(buttons(prompt)) == {ids.LINK_PRODUCTION, ids.LINK_SANDBOX, ids.LINK_CUSTOM}
