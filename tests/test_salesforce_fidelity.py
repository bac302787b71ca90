"""Platform fidelity, rows 9-15: the fake answers as Salesforce does (the Contract in
bot/standins/salesforce.py, each behaviour with its source), and the bot does the right
thing with each answer. Each test is named after the behaviour it holds the bot to.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlmodel import select

from bot import ids, messages
from bot.domain import Health
from bot.links.pending import MAX_REVOKE_TRIES
from storage import repository as repo
from storage.models import AuditEvent, PendingToken
from tests.fakes import FakeSalesforce, SfUser, pkce_challenge
from tests.support import (
    ADMIN,
    CHANNEL,
    CLIENT_ID,
    CLIENT_SECRET,
    TEAM,
    bot_with,
    link,
    open_login,
    start_link,
    text_of,
    wait_until,
)
from tests.support.core import CoreUnderTest as Core
from tests.support.core import core_for

ORG, USER = "00D000000000001AAA", "005000000000001AAA"
REDIRECT = "http://127.0.0.1:9/salesforce/callback"
UNKNOWN_KEY = "3MVG9-a-connected-app-that-was-deleted"


@pytest.fixture
def sf() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(CLIENT_ID, CLIENT_SECRET, redirect_uri=REDIRECT) as fake:
        fake.login_as = fake.add_user(ORG, USER, "vcc-api@acme.example")
        yield fake


def api_user(fake: FakeSalesforce) -> SfUser:
    assert fake.login_as is not None
    return fake.login_as


def run(database_url: str, fake: FakeSalesforce, test: Any, **kw: Any) -> None:
    async def main() -> None:
        async with core_for(database_url, fake, **kw) as core:
            await test(core)

    asyncio.run(main())


def authorize_query(**changes: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "state": "st4te",
        "scope": "api id refresh_token",
        "code_challenge": pkce_challenge(secrets.token_urlsafe(48)),
        "code_challenge_method": "S256",
        **changes,
    }


def oauth(fake: FakeSalesforce, path: str, **form: str) -> httpx.Response:
    return httpx.post(f"{fake.url}/services/oauth2/{path}", data=form)


def login(fake: FakeSalesforce) -> dict[str, str]:
    """The web-server flow against the fake, as a browser and a client would run it."""
    verifier = secrets.token_urlsafe(48)
    query = authorize_query(code_challenge=pkce_challenge(verifier))
    back = httpx.get(f"{fake.url}/services/oauth2/authorize", params=query)
    code = dict(parse_qsl(urlsplit(back.headers["location"]).query))["code"]
    tokens = oauth(
        fake,
        "token",
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT,
        code_verifier=verifier,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    assert tokens.status_code == 200, tokens.text
    return dict(tokens.json())


def refreshes(fake: FakeSalesforce) -> int:
    return sum(1 for r in list(fake.requests) if r.form.get("grant_type") == "refresh_token")


def revokes(fake: FakeSalesforce) -> int:
    return sum(1 for r in list(fake.requests) if r.path == "/services/oauth2/revoke")


def dms_saying(slack: Any, words: str) -> list[dict[str, Any]]:
    return [m for m in slack.dms_to(ADMIN) if words in text_of(m)]


def notices(slack: Any, words: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages_to(CHANNEL) if words in text_of(m)]


def status_text(client: Any, account: str = "acme") -> str:
    """`/vcc status`: one answer, after the live check."""
    return text_of(client.replies(client.command(f"status {account}"), 1, 10)[-1])


def stored_health(bot: Any, account: str = "acme") -> str:
    with bot.runtime.db.transaction(write=False) as session:
        row = repo.get_account(session, team_id=TEAM, account_id=account)
        assert row is not None
        return row.health


def errors_naming(caplog: Any, words: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and words in r.getMessage()]


# ---- the fake keeps its Contract -------------------------------------------------------


def test_the_fake_shows_its_own_page_for_an_unknown_consumer_key_and_never_calls_back(sf):
    answer = httpx.get(
        f"{sf.url}/services/oauth2/authorize", params=authorize_query(client_id=UNKNOWN_KEY)
    )
    assert answer.status_code == 400 and "location" not in answer.headers
    assert answer.headers["content-type"].startswith("text/html")
    assert "invalid_client_id" in answer.text and "client%20identifier%20invalid" in answer.text


def test_the_fake_tells_an_unknown_consumer_key_from_a_wrong_secret(sf):
    unknown = oauth(sf, "token", grant_type="refresh_token", client_id=UNKNOWN_KEY)
    assert unknown.status_code == 400
    assert unknown.json() == {
        "error": "invalid_client_id",
        "error_description": "client identifier invalid",
    }
    wrong = oauth(
        sf, "token", grant_type="refresh_token", client_id=CLIENT_ID, client_secret="nope"
    )
    assert wrong.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }


@pytest.mark.parametrize("change", ["deactivated", "frozen"])
def test_the_fake_refuses_an_inactive_users_refresh_as_invalid_grant_inactive_user(change, sf):
    tokens = login(sf)
    if change == "deactivated":
        api_user(sf).active = False
    else:
        api_user(sf).frozen = True
    refresh = oauth(
        sf,
        "token",
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    assert refresh.json() == {"error": "invalid_grant", "error_description": "inactive user"}


@pytest.mark.parametrize(
    ("kind", "permitted", "page"),
    [
        ("connected", False, "OAUTH_APPROVAL_ERROR_GENERIC"),
        ("external", True, "OAUTH_EC_APP_NOT_FOUND"),
    ],
)
def test_the_fake_keeps_an_app_the_org_has_not_installed_on_its_own_page(kind, permitted, page, sf):
    sf.app_installed, sf.app_kind = False, kind
    api_user(sf).approve_uninstalled = permitted
    answer = httpx.get(f"{sf.url}/services/oauth2/authorize", params=authorize_query())
    assert answer.status_code == 400 and "location" not in answer.headers
    assert page in answer.text
    if kind == "connected":
        assert "app must be installed into org" in answer.text
        api_user(sf).approve_uninstalled = True  # the permission lets this user through
        allowed = httpx.get(f"{sf.url}/services/oauth2/authorize", params=authorize_query())
        assert allowed.status_code == 302
        assert allowed.headers["location"].startswith(REDIRECT)


def test_the_fake_answers_revoke_with_either_documented_error(sf):
    assert oauth(sf, "revoke", token="5Aep861-unknown").json()["error"] == "invalid_token"
    sf.revoke_refusal = "unsupported_token_type"
    refused = oauth(sf, "revoke", token="5Aep861-anything")
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "unsupported_token_type",
        "error_description": "Token type not supported",
    }


def test_the_fake_serves_only_its_api_versions_and_the_fields_it_knows(sf):
    auth = {"Authorization": f"Bearer {login(sf)['access_token']}"}

    def query(version: str, fields: str) -> httpx.Response:
        soql = f"SELECT {fields} FROM UserPermissionAccess"
        url = f"{sf.url}/services/data/v{version}/query"
        return httpx.get(url, params={"q": soql}, headers=auth)

    assert query("62.0", "Id, PermissionsApiEnabled").status_code == 200
    unknown_version = query("99.0", "Id")
    assert unknown_version.status_code == 404
    assert unknown_version.json() == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]
    unknown_field = query("62.0", "Id, PermissionsMadeUp").json()[0]
    assert unknown_field["errorCode"] == "INVALID_FIELD"
    assert "No such column 'PermissionsMadeUp'" in unknown_field["message"]
    listed = httpx.get(f"{sf.url}/services/data/").json()
    assert [v["version"] for v in listed] == list(sf.api_versions)


# ---- row 9: the connected app's own errors are "could not check", and one alert ---------


def test_a_deleted_connected_app_is_could_not_check_with_one_alert_not_a_notice_per_link(
    settings, slack, salesforce, browser, caplog
):
    sf = salesforce.production
    with bot_with(settings, slack, vcc_health_interval=1) as (running, client):
        for account in ("acct-1", "acct-2"):
            assert link(client, browser, account).status_code == 200
        wait_until(lambda: not running.runtime.background.busy, 10, "the re-checks after linking")
        caplog.set_level(logging.INFO)
        sf.client_id = UNKNOWN_KEY  # the bot's consumer key is no longer known
        seen = refreshes(sf)
        wait_until(lambda: refreshes(sf) >= seen + 6, 15, "three monitor passes over both")

        assert "Could not check" in (body := status_text(client, "acct-1"))
        assert "SALESFORCE_CLIENT_ID" in body
        assert notices(slack, "is broken") == []
        assert stored_health(running, "acct-1") == stored_health(running, "acct-2") == "healthy"
        # One alert for operators and one for the admin who linked the accounts.
        assert len(errors_naming(caplog, "SALESFORCE_CLIENT_ID")) == 1
        alert = dms_saying(slack, "SALESFORCE_CLIENT_ID")
        assert len(alert) == 1
        assert "acct-1" in text_of(alert[0]) and "acct-2" in text_of(alert[0])

        sf.client_id = CLIENT_ID  # fixed: the links were never broken, so nothing recovers
        assert "the link works" in status_text(client, "acct-1")
        assert notices(slack, "works again") == []


@pytest.mark.parametrize(
    ("break_it", "setting"),
    [
        (lambda sf: setattr(sf, "client_id", UNKNOWN_KEY), "SALESFORCE_CLIENT_ID"),
        (
            lambda sf: setattr(sf, "client_secret", "rotated-in-salesforce"),
            "SALESFORCE_CLIENT_SECRET",
        ),
    ],
    ids=["unknown_consumer_key", "wrong_consumer_secret"],
)
def test_a_connected_app_error_alerts_each_linking_admin_at_most_once_a_day(
    break_it, setting, database_url, sf, caplog
):
    sf.max_approvals = 10

    async def test(core: Core) -> None:
        for account in ("acme", "beta"):
            await core.link(sf, account)
        await core.background.idle(10)
        caplog.set_level(logging.INFO)
        break_it(sf)
        for _ in range(3):
            for account in ("acme", "beta"):
                check = await core.health.check(TEAM, account, reuse=False)
                assert check.health == Health.UNKNOWN and setting in (check.reason or "")
        assert core.notifier.of("broken") == []
        alerts = core.notifier.of("connected_app_refused")
        assert len(alerts) == 1
        user_id, accounts, problem = alerts[0]
        assert user_id == ADMIN and {a.account_id for a in accounts} == {"acme", "beta"}
        assert setting in problem
        assert len(errors_naming(caplog, setting)) == 1

        core.clock.advance(timedelta(days=1).total_seconds() + 1)
        await core.health.check(TEAM, "acme", reuse=False)
        assert len(core.notifier.of("connected_app_refused")) == 2  # the next day, again

    run(database_url, sf, test, reuse_seconds=0)


# ---- row 10: a refused refresh is explained by its description, with what to change -----


@pytest.mark.parametrize("change", ["deactivate", "freeze"])
def test_a_deactivated_or_frozen_api_user_is_told_to_reactivate_or_unfreeze(
    change, slack_client, browser, bot, salesforce, slack
):
    assert link(slack_client, browser, "acme").status_code == 200
    if change == "deactivate":
        salesforce.api_user.active = False
    else:
        salesforce.api_user.frozen = True
    body = status_text(slack_client)
    assert "Broken" in body and "reactivate" in body and "unfreeze" in body
    assert "sixth" not in body and "revoked" not in body
    notice = slack.wait_for(lambda: notices(slack, "is broken"))
    assert "reactivate" in text_of(notice[0])


def restrict_login(sf: FakeSalesforce) -> None:
    api_user(sf).login_restricted = True


def lock_org(sf: FakeSalesforce) -> None:
    body = {"error": "inactive_org", "error_description": "organization is inactive"}
    sf.fail_next("/services/oauth2/token", 400, body)


@pytest.mark.parametrize(
    ("break_it", "advice"),
    [
        (restrict_login, "Login IP Ranges"),
        (lambda sf: sf.revoke_user_tokens(api_user(sf)), "Refresh Token Policy"),
        (lambda sf: setattr(api_user(sf), "frozen", True), "unfreeze"),
        (lock_org, "locked"),
    ],
    ids=["ip_or_hours", "revoked_or_expired", "frozen", "org_locked"],
)
def test_each_refused_refresh_tells_the_salesforce_admin_what_to_change(
    break_it, advice, database_url, sf
):
    async def test(core: Core) -> None:
        await core.link(sf)
        break_it(sf)
        check = await core.health.check(TEAM, "acme", reuse=False)
        assert check.health == Health.BROKEN and advice in (check.reason or "")

    run(database_url, sf, test, reuse_seconds=0)


def test_an_inactive_user_is_not_blamed_on_a_sixth_approval(database_url, sf):
    async def test(core: Core) -> None:
        await core.link(sf)
        api_user(sf).active = False
        check = await core.health.check(
            TEAM, "acme", reuse=False, revoked_reason=messages.sixth_approval_elsewhere("x")
        )
        assert check.health == Health.BROKEN and "reactivate" in (check.reason or "")

    run(database_url, sf, test, reuse_seconds=0)


# ---- row 11: any 4xx from /revoke is final; failed revokes back off, then give up -------


def pending_rows(core: Core) -> list[PendingToken]:
    return core.db.call(lambda s: list(s.exec(select(PendingToken)).all()), write=False)


async def leave_pending(core: Core, sf: FakeSalesforce) -> None:
    """The account's token left pending, as by a process that died mid-link."""
    await core.link(sf)
    core.leave_pending(sf)
    core.clock.advance(timedelta(minutes=6).total_seconds())  # past the grace


def test_a_revoke_refused_as_unsupported_token_type_is_final(database_url, sf):
    async def test(core: Core) -> None:
        await leave_pending(core, sf)
        sf.revoke_refusal = "unsupported_token_type"
        assert await core.pending.sweep() == 0
        assert pending_rows(core) == [] and revokes(sf) == 1
        await core.pending.sweep()
        assert revokes(sf) == 1  # never asked again

    run(database_url, sf, test)


def test_a_revoke_salesforce_does_not_answer_backs_off_then_gives_up_with_an_error(
    database_url, sf, caplog
):
    async def test(core: Core) -> None:
        await leave_pending(core, sf)
        sf.fail_next("/services/oauth2/revoke", 503, count=1000)
        waits: list[float] = []
        for _ in range(MAX_REVOKE_TRIES + 5):
            before = revokes(sf)
            await core.pending.sweep()
            assert revokes(sf) == before + 1
            assert await core.pending.sweep() == 0 and revokes(sf) == before + 1  # not yet
            rows = pending_rows(core)
            if not rows:
                break
            assert rows[0].next_try_at is not None
            waits.append((rows[0].next_try_at - core.clock()).total_seconds())
            core.clock.now = rows[0].next_try_at
        assert pending_rows(core) == [], "still retrying after the cap"
        assert revokes(sf) == MAX_REVOKE_TRIES
        assert waits == sorted(waits) and waits[1] == 2 * waits[0]  # backing off
        assert len(errors_naming(caplog, "gave up revoking")) == 1

    run(database_url, sf, test)


# ---- row 12: only the grant's errors are about the link --------------------------------


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        (
            "/services/oauth2/token",
            400,
            {"error": "rate_limit_exceeded", "error_description": "too many requests"},
        ),
        ("/services/oauth2/token", 400, {"error": "unknown_error", "error_description": "retry"}),
        ("/services/oauth2/token", 400, {"error": "invalid_request", "error_description": "x"}),
        ("/services/data/", 403, None),  # REQUEST_LIMIT_EXCEEDED: the org's API limit
    ],
    ids=["rate_limit_exceeded", "unknown_error", "invalid_request", "request_limit_exceeded"],
)
def test_a_refusal_that_is_not_about_the_grant_is_could_not_check(
    path, status, body, database_url, sf
):
    async def test(core: Core) -> None:
        await core.link(sf)
        sf.fail_next(path, status, body)
        check = await core.health.check(TEAM, "acme", reuse=False)
        assert check.health == Health.UNKNOWN
        assert core.notifier.of("broken") == []
        row = core.db.call(
            lambda s: repo.get_account(s, team_id=TEAM, account_id="acme"), write=False
        )
        assert row.health == Health.HEALTHY

    run(database_url, sf, test, reuse_seconds=0)


# ---- row 13: strict about API versions and fields --------------------------------------


def queries(fake: FakeSalesforce) -> list[str]:
    return [r.path for r in list(fake.requests) if r.path.endswith("/query")]


def test_an_org_that_does_not_serve_the_bots_api_version_is_checked_at_one_it_serves(
    slack_client, browser, bot, salesforce, slack
):
    sf = salesforce.production
    sf.api_versions = ("58.0", "59.0", "60.0", "61.0")  # an org a release behind the bot
    assert link(slack_client, browser, "acme").status_code == 200
    assert "the link works" in status_text(slack_client)
    assert queries(sf)[-1] == "/services/data/v61.0/query"


def test_a_permission_field_the_org_lacks_is_left_unchecked_against_the_strict_fake(
    slack_client, browser, bot, salesforce, slack
):
    salesforce.production.unsupported_fields = {"PermissionsViewAllUsers"}
    assert link(slack_client, browser, "acme").status_code == 200
    dm = slack.wait_for(lambda: dms_saying(slack, "would not let me check"))
    assert "View All Users" in text_of(dm[-1])
    assert "the link works" in status_text(slack_client)


# ---- row 14: every documented My Domain login partition --------------------------------


def submit_my_domain(client: Any, slack: Any, host: str) -> httpx.Response:
    before = len(slack.opened_views)
    client.click(ids.LINK_CUSTOM, "acme")
    # The click's 200 comes before the modal opens: wait for this click's modal.
    modal = slack.wait_for(lambda: len(slack.opened_views) > before and slack.opened_views)[-1]
    return client.submit_view(modal["view"], {ids.MY_DOMAIN_BLOCK: {ids.MY_DOMAIN_INPUT: host}})


@pytest.mark.parametrize(
    "host",
    [
        "acme.my.salesforce.com",
        "acme--uat.sandbox.my.salesforce.com",
        "acme-dev-ed.develop.my.salesforce.com",  # Developer Edition
        "power-ability-5678.scratch.my.salesforce.com",  # scratch org
        "acme.demo.my.salesforce.com",  # demo org
        "acme.patch.my.salesforce.com",  # patch org
        "acme-playground.trailblaze.my.salesforce.com",  # Trailhead Playground
    ],
)
def test_every_documented_my_domain_login_partition_is_accepted_in_the_modal(
    host, slack_client, slack, database_url
):
    if not database_url.startswith("sqlite"):
        pytest.skip("input validation, not storage: once is enough")
    response = submit_my_domain(slack_client, slack, host)
    assert response.text == "", response.text
    dm = slack.wait_for(lambda: slack.dms_to(ADMIN))[-1]
    assert "Custom domain" in text_of(dm)


@pytest.mark.parametrize(
    "host",
    [
        "acme.free.my.salesforce.com",  # reserved for Salesforce's internal use
        "acme.dev.my.salesforce.com",
        "acme.develop.salesforce.com",
        "acme.sandbox.develop.my.salesforce.com",
        "acme.develop.my.salesforce.com.evil.example",
        ".develop.my.salesforce.com",
    ],
)
def test_a_host_outside_the_documented_partitions_is_still_refused_in_the_modal(
    host, slack_client, slack, database_url
):
    if not database_url.startswith("sqlite"):
        pytest.skip("input validation, not storage: once is enough")
    body = submit_my_domain(slack_client, slack, host).json()
    assert body["response_action"] == "errors"
    assert "NAME.develop.my.salesforce.com" in body["errors"][ids.MY_DOMAIN_BLOCK]
    assert slack.dms_to(ADMIN) == []


# ---- row 15: errors Salesforce shows on its own page -------------------------------------


def uninstall(kind: str, sf: FakeSalesforce) -> None:
    sf.app_installed, sf.app_kind = False, kind


@pytest.mark.parametrize(
    ("break_it", "page"),
    [
        (lambda sf: setattr(sf, "client_id", UNKNOWN_KEY), "invalid_client_id"),
        (partial(uninstall, "connected"), "OAUTH_APPROVAL_ERROR_GENERIC"),
        (partial(uninstall, "external"), "OAUTH_EC_APP_NOT_FOUND"),
    ],
    ids=["unknown_consumer_key", "connected_app_not_installed", "external_app_not_installed"],
)
def test_salesforce_shows_its_own_error_page_and_the_bot_never_hears_of_it(
    break_it, page, slack_client, browser, bot, salesforce, slack
):
    sf = salesforce.production
    break_it(sf)
    start = start_link(slack_client, "acme")
    to_salesforce = open_login(browser, start.login_url)
    assert to_salesforce.status_code == 303
    at_salesforce = browser.get(to_salesforce.headers["location"])
    assert at_salesforce.status_code == 400 and "location" not in at_salesforce.headers
    assert page in at_salesforce.text
    assert urlsplit(str(at_salesforce.url)).path == "/services/oauth2/authorize"
    assert [r for r in sf.requests if r.path == "/services/oauth2/token"] == []
    with bot.runtime.db.transaction(write=False) as session:
        refused = [e for e in session.exec(select(AuditEvent)).all() if e.event == "link_refused"]
        assert refused == [] and repo.get_account(session, team_id=TEAM, account_id="acme") is None


def test_the_login_dm_says_what_to_do_if_salesforce_shows_an_error(slack_client, bot):
    start = start_link(slack_client, "acme")
    assert messages.LOGIN_ERROR_HELP in text_of(start.dm)


def test_the_readme_tells_admins_to_install_the_connected_app_in_each_org():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    setup = readme[
        readme.index("### 2. The Salesforce connected app") : readme.index("## Configuration")
    ]
    for words in (
        "Approve Uninstalled Connected Apps",
        "OAUTH_APPROVAL_ERROR_GENERIC",
        "OAUTH_EC_APP_NOT_FOUND",
        "invalid_client_id",
    ):
        assert words in setup, words
