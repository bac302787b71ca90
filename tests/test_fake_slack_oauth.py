"""The fake Slack plays many workspaces and Slack's OAuth v2 install like Slack does
(bot/standins/slack.py lists each behaviour with its source). Over real HTTP, with slack_sdk's
own clients where the bot will use them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store import Bot
from slack_sdk.oauth.token_rotation import TokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bot.standins.slack import FakeSlack

CLIENT_ID, CLIENT_SECRET = "1234.5678", "s3cret"
CALLBACK = "http://127.0.0.1:9/slack/oauth_redirect"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uris=[CALLBACK])
    with fake:
        yield fake


def error_of(client: WebClient, method: str, **params: Any) -> str:
    with pytest.raises(SlackApiError) as caught:
        client.api_call(method, params=params)
    return str(caught.value.response["error"])


def authorize(slack: FakeSlack, **overrides: str | None) -> httpx.Response:
    query: dict[str, str | None] = {
        "client_id": CLIENT_ID,
        "scope": "commands,chat:write",
        "user_scope": "",
        "state": "st4te",
        "redirect_uri": CALLBACK,
        **overrides,
    }
    return httpx.get(slack.authorize_url, params={k: v for k, v in query.items() if v is not None})


def code_from(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st4te"]
    return query["code"][0]


def exchange(slack: FakeSlack, code: str, redirect_uri: str | None = CALLBACK) -> dict[str, Any]:
    """What the bot will do: AsyncWebClient.oauth_v2_access (HTTP Basic credentials)."""

    async def run() -> dict[str, Any]:
        client = AsyncWebClient(base_url=slack.api_url)
        response = await client.oauth_v2_access(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code, redirect_uri=redirect_uri
        )
        return dict(response.data)  # type: ignore[arg-type]

    return asyncio.run(run())


def access(slack: FakeSlack, **form: str) -> dict[str, Any]:
    """oauth.v2.access with form-field credentials, the other way Slack accepts them."""
    creds = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return httpx.post(slack.api_url + "oauth.v2.access", data={**creds, **form}).json()


# ---- the single workspace stays as it was --------------------------------------------------


def test_the_home_workspace_answers_as_before(slack: FakeSlack) -> None:
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    assert client.auth_test().data == {
        "ok": True,
        "url": "https://fake-team.slack.com/",
        "team": "Fake Team",
        "user": "vccbot",
        "team_id": "T0001",
        "user_id": "U0BOT",
        "bot_id": "B0BOT",
        "is_enterprise_install": False,
    }
    slack.add_user("U1")
    assert client.users_info(user="U1")["user"]["team_id"] == "T0001"
    assert slack.calls[-1].team_id == "T0001"


# ---- workspaces --------------------------------------------------------------------------


def test_each_token_speaks_for_its_own_workspace(slack: FakeSlack) -> None:
    slack.add_workspace("T0002", team_name="Beta Corp")
    grid = slack.add_workspace("T0003", enterprise_id="E0001", enterprise_name="Acme Org")
    slack.add_user("UA", team_id="T0001")
    slack.add_user("UB", team_id="T0002")
    slack.add_user("UC", team_id="T0003")
    home = WebClient(token=slack.bot_token, base_url=slack.api_url)
    beta = WebClient(token=slack.install("T0002", "UB")["access_token"], base_url=slack.api_url)
    acme = WebClient(token=slack.install("T0003", "UC")["access_token"], base_url=slack.api_url)

    who = beta.auth_test().data
    assert isinstance(who, dict)
    assert (who["team_id"], who["team"], who["url"]) == (
        "T0002",
        "Beta Corp",
        "https://beta-corp.slack.com/",
    )
    assert who["user_id"] == "U0002BOT" and "enterprise_id" not in who
    who = acme.auth_test().data
    assert isinstance(who, dict)
    assert (who["team_id"], who["enterprise_id"], who["is_enterprise_install"]) == (
        "T0003",
        "E0001",
        False,
    )
    assert grid.bot_token == acme.token

    # Users belong to their workspace: another workspace's token does not find them.
    assert beta.users_info(user="UB")["user"]["team_id"] == "T0002"
    assert error_of(beta, "users.info", user="UA") == "user_not_found"
    assert error_of(home, "users.info", user="UB") == "user_not_found"
    assert error_of(beta, "chat.postMessage", channel="UA", text="hi") == "channel_not_found"

    beta.chat_postMessage(channel="C1", text="from beta")
    home.chat_postMessage(channel="C1", text="from home")
    assert [m["text"] for m in slack.messages_from("T0002")] == ["from beta"]
    assert [m["_team"] for m in slack.messages_to("C1")] == ["T0002", "T0001"]
    assert [c.team_id for c in slack.calls if c.method == "chat.postMessage"][-2:] == [
        "T0002",
        "T0001",
    ]
    assert error_of(WebClient(token="xoxb-nobody", base_url=slack.api_url), "auth.test") == (
        "invalid_auth"
    )
    assert slack.calls[-1].team_id is None


# ---- the OAuth v2 install ------------------------------------------------------------------


def test_an_install_round_trip_through_authorize_and_oauth_v2_access(slack: FakeSlack) -> None:
    slack.add_workspace("T0002", team_name="Beta Corp")
    slack.add_user("UADMIN", team_id="T0002", is_admin=True)
    slack.approve_installs_as("T0002", "UADMIN")

    code = code_from(authorize(slack))
    assert slack.authorize_requests[-1]["scope"] == "commands,chat:write"
    body = exchange(slack, code)
    token = body.pop("access_token")
    assert token.startswith("xoxb-")
    assert body == {
        "ok": True,
        "token_type": "bot",
        "scope": "commands,chat:write",
        "bot_user_id": "U0002BOT",
        "app_id": slack.app_id,
        "team": {"id": "T0002", "name": "Beta Corp"},
        "enterprise": None,
        "is_enterprise_install": False,
        "authed_user": {"id": "UADMIN"},
    }
    # The credentials came as HTTP Basic auth, as slack_sdk sends them.
    assert slack.requests[-1].headers["authorization"].startswith("Basic ")
    assert WebClient(token=token, base_url=slack.api_url).auth_test()["team_id"] == "T0002"

    # A code is good once.
    with pytest.raises(SlackApiError) as caught:
        exchange(slack, code)
    assert caught.value.response["error"] == "invalid_code"
    # Installing again without rotation hands back the same bot token.
    assert exchange(slack, code_from(authorize(slack)))["access_token"] == token


def test_user_scopes_add_a_user_token(slack: FakeSlack) -> None:
    slack.add_user("UADMIN")
    slack.approve_installs_as("T0001", "UADMIN")
    body = exchange(slack, code_from(authorize(slack, user_scope="users:read")))
    user = body["authed_user"]
    assert set(user) == {"id", "scope", "access_token", "token_type"}
    assert (user["id"], user["scope"], user["token_type"]) == ("UADMIN", "users:read", "user")
    who = WebClient(token=user["access_token"], base_url=slack.api_url).auth_test().data
    assert isinstance(who, dict)
    assert who["user_id"] == "UADMIN" and "bot_id" not in who


def test_authorize_refuses_a_wrong_app_or_callback_and_reports_a_cancel(slack: FakeSlack) -> None:
    slack.add_user("UADMIN")
    slack.approve_installs_as("T0001", "UADMIN")
    wrong_app = authorize(slack, client_id="9999.9999")
    assert wrong_app.status_code == 400 and "location" not in wrong_app.headers
    elsewhere = authorize(slack, redirect_uri="http://evil.example/cb")
    assert elsewhere.status_code == 400 and "location" not in elsewhere.headers

    # Without a redirect_uri Slack uses the configured one; the exchange then sends none.
    code = code_from(authorize(slack, redirect_uri=None))
    assert exchange(slack, code, redirect_uri=None)["ok"] is True

    slack.cancel_installs()
    cancelled = authorize(slack)
    assert cancelled.status_code == 302
    assert parse_qs(urlsplit(cancelled.headers["location"]).query) == {
        "error": ["access_denied"],
        "state": ["st4te"],
    }


def test_oauth_v2_access_errors(slack: FakeSlack) -> None:
    slack.add_user("UADMIN")
    slack.approve_installs_as("T0001", "UADMIN")
    code = code_from(authorize(slack))
    assert access(slack, code=code, client_id="0000.0000")["error"] == "invalid_client_id"
    assert access(slack, code=code, client_secret="nope")["error"] == "bad_client_secret"
    assert access(slack, code=code, grant_type="password")["error"] == "invalid_grant_type"
    assert access(slack, code="4724469134.1.abc", redirect_uri=CALLBACK)["error"] == "invalid_code"
    assert access(slack, code=code, redirect_uri="http://127.0.0.1:9/other")["error"] == (
        "bad_redirect_uri"
    )
    assert access(slack, code=code)["error"] == "bad_redirect_uri"  # authorize sent one
    # None of these used the code up; form-field credentials work as well as Basic auth.
    assert access(slack, code=code, redirect_uri=CALLBACK)["ok"] is True
    assert access(slack, code=code, redirect_uri=CALLBACK)["error"] == "invalid_code"

    stale = code_from(authorize(slack))
    slack.expire_codes()  # ten minutes pass
    assert access(slack, code=stale, redirect_uri=CALLBACK)["error"] == "invalid_code"


# ---- token rotation ------------------------------------------------------------------------


def test_rotating_tokens_expire_and_refresh_tokens_are_single_use(slack: FakeSlack) -> None:
    slack.add_workspace("T0002", rotating=True)
    slack.add_user("UADMIN", team_id="T0002")
    slack.approve_installs_as("T0002", "UADMIN")
    body = exchange(slack, code_from(authorize(slack)))
    token, refresh = body["access_token"], body["refresh_token"]
    assert token.startswith("xoxe.xoxb-1-") and refresh.startswith("xoxe-1-")
    assert body["expires_in"] == 43200 and body["token_type"] == "bot"

    client = WebClient(token=token, base_url=slack.api_url)
    assert 43000 < client.auth_test()["expires_in"] <= 43200
    slack.expire_tokens("T0002")  # twelve hours pass
    assert error_of(client, "auth.test") == "token_expired"

    renewed = access(slack, grant_type="refresh_token", refresh_token=refresh)
    assert renewed["token_type"] == "bot" and renewed["bot_user_id"] == "U0002BOT"
    assert renewed["team"] == {"id": "T0002", "name": "Team T0002"}
    assert renewed["access_token"] not in (token, None)
    assert renewed["refresh_token"] not in (refresh, None) and renewed["expires_in"] == 43200
    assert WebClient(token=renewed["access_token"], base_url=slack.api_url).auth_test()["ok"]
    again = access(slack, grant_type="refresh_token", refresh_token=refresh)
    assert again == {"ok": False, "error": "invalid_refresh_token"}
    assert slack.workspaces["T0002"].refresh_token == renewed["refresh_token"]

    # slack_sdk's own rotator accepts the fake's answer.
    rotator = TokenRotator(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        client=WebClient(base_url=slack.api_url),
    )
    bot = Bot(
        team_id="T0002",
        bot_token=renewed["access_token"],
        bot_refresh_token=renewed["refresh_token"],
        bot_token_expires_in=0,
        bot_id="B0002BOT",
        bot_user_id="U0002BOT",
        installed_at=time.time(),
    )
    rotated = rotator.perform_bot_token_rotation(bot=bot, minutes_before_expiration=1)
    assert rotated is not None and rotated.bot_token != renewed["access_token"]


# ---- Enterprise Grid, org-wide -------------------------------------------------------------


def test_an_org_wide_install_reaches_every_workspace_of_its_organization(slack: FakeSlack) -> None:
    slack.add_workspace("T0010", enterprise_id="E0001", enterprise_name="Acme Org", org_wide=True)
    slack.add_workspace("T0011", enterprise_id="E0001")
    slack.add_workspace("T0020", enterprise_id="E0002")
    slack.add_user("WADMIN", team_id="T0010", is_admin=True)
    slack.add_user("WSIBLING", team_id="T0011")
    slack.add_user("WSTRANGER", team_id="T0020")
    slack.approve_installs_as("T0010", "WADMIN")
    body = exchange(slack, code_from(authorize(slack)))
    assert (body["team"], body["enterprise"], body["is_enterprise_install"]) == (
        None,
        {"id": "E0001", "name": "Acme Org"},
        True,
    )
    client = WebClient(token=body["access_token"], base_url=slack.api_url)
    who = client.auth_test().data
    assert isinstance(who, dict)
    assert (who["enterprise_id"], who["is_enterprise_install"]) == ("E0001", True)
    assert client.users_info(user="WSIBLING", team_id="T0011")["ok"]
    assert slack.calls[-1].team_id == "T0011"
    assert error_of(client, "users.info", user="WSTRANGER") == "user_not_found"
    assert slack.calls[-1].team_id == "E0001"


# ---- revocation and uninstall --------------------------------------------------------------


def test_auth_revoke_and_uninstall_revoke_tokens(slack: FakeSlack) -> None:
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    assert client.auth_revoke(test=True).data == {"ok": True, "revoked": False}
    assert client.auth_revoke().data == {"ok": True, "revoked": True}
    assert error_of(client, "auth.test") == "token_revoked"

    slack.add_workspace("T0002", rotating=True)
    slack.add_user("UADMIN", team_id="T0002")
    body = slack.install("T0002", "UADMIN", user_scope="users:read")
    slack.uninstall("T0002")
    for token in (body["access_token"], body["authed_user"]["access_token"]):
        assert error_of(WebClient(token=token, base_url=slack.api_url), "auth.test") == (
            "token_revoked"
        )
    assert access(slack, grant_type="refresh_token", refresh_token=body["refresh_token"]) == {
        "ok": False,
        "error": "invalid_refresh_token",
    }
    assert slack.workspaces["T0002"].bot_token is None


def test_uninstall_events_are_built_as_documented(slack: FakeSlack) -> None:
    slack.add_user("UADMIN")
    slack.install("T0001", "UADMIN", user_scope="users:read")
    slack.uninstall("T0001")
    uninstalled = slack.app_uninstalled_event("T0001")
    event_id, event_time = uninstalled.pop("event_id"), uninstalled.pop("event_time")
    assert event_id.startswith("Ev") and isinstance(event_time, int)
    authorization = {
        "enterprise_id": None,
        "team_id": "T0001",
        "user_id": "U0BOT",
        "is_bot": True,
        "is_enterprise_install": False,
    }
    assert uninstalled == {
        "token": slack.verification_token,
        "team_id": "T0001",
        "api_app_id": slack.app_id,
        "event": {"type": "app_uninstalled"},
        "type": "event_callback",
        "authorizations": [authorization],
        "is_ext_shared_channel": False,
    }
    revoked = slack.tokens_revoked_event("T0001")
    assert revoked["event"] == {
        "type": "tokens_revoked",
        "tokens": {"oauth": ["UADMIN"], "bot": ["U0BOT"]},
    }
    assert revoked["event_id"] != event_id and revoked["type"] == "event_callback"

    slack.add_workspace("T0010", enterprise_id="E0001", org_wide=True, bot_user_id="W0BOT")
    org = slack.tokens_revoked_event("T0010", oauth=[], bot=["W0BOT"])
    assert org["enterprise_id"] == "E0001"
    assert org["authorizations"][0] | {"is_bot": True} == {
        "enterprise_id": "E0001",
        "team_id": None,
        "user_id": "W0BOT",
        "is_bot": True,
        "is_enterprise_install": True,
    }
