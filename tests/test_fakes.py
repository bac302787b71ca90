"""The fakes themselves behave like the Salesforce and Slack APIs they stand in for."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.fakes import FakeSalesforce, FakeSlack, pkce_challenge, token_signature

CLIENT_ID, CLIENT_SECRET = "cid", "csecret"
REDIRECT = "http://localhost/oauth/callback"


@pytest.fixture
def sf() -> Iterator[FakeSalesforce]:
    with FakeSalesforce(CLIENT_ID, CLIENT_SECRET, redirect_uri=REDIRECT) as fake:
        fake.login_as = fake.add_user("00D000000000001AAA", "005000000000001AAA", "ann@example.com")
        yield fake


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def login(sf: FakeSalesforce, scope: str = "api id refresh_token") -> dict:
    verifier = secrets.token_urlsafe(48)
    query = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "state": "st4te",
        "scope": scope,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    r = httpx.get(f"{sf.url}/services/oauth2/authorize", params=query)
    assert r.status_code == 302
    location = r.headers["location"]
    assert location.startswith(REDIRECT + "?") and "%3D%3D" in location
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == ["st4te"]
    form = {
        "grant_type": "authorization_code",
        "code": params["code"][0],
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    r = httpx.post(f"{sf.url}/services/oauth2/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))
    assert r.status_code == 200, r.text
    return r.json()


def token_post(sf: FakeSalesforce, **form: str) -> httpx.Response:
    creds = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return httpx.post(f"{sf.url}/services/oauth2/token", data={**creds, **form})


def test_authorize_token_round_trip(sf: FakeSalesforce) -> None:
    tok = login(sf)
    user = sf.login_as
    assert tok["instance_url"] == sf.url
    assert tok["id"] == f"{sf.url}/id/{user.org_id}/{user.user_id}"
    assert tok["token_type"] == "Bearer" and tok["scope"] == "api id refresh_token"
    assert tok["access_token"].startswith("00D000000000001!AQ")
    assert tok["refresh_token"].startswith("5Aep861")
    assert tok["signature"] == token_signature(CLIENT_SECRET, tok["id"], tok["issued_at"])
    assert sf.authorize_requests[0]["code_challenge_method"] == "S256"

    sf.tamper_signature = True
    assert login(sf)["signature"] != token_signature(CLIENT_SECRET, tok["id"], tok["issued_at"])


def test_authorize_and_code_errors(sf: FakeSalesforce) -> None:
    base = {"response_type": "code", "client_id": CLIENT_ID, "code_challenge": "x"}
    url = f"{sf.url}/services/oauth2/authorize"
    bad = httpx.get(url, params={**base, "redirect_uri": "http://evil/cb"})
    assert bad.status_code == 400 and "redirect_uri_mismatch" in bad.text
    sf.authorize_error = "access_denied"
    r = httpx.get(
        url,
        params={**base, "redirect_uri": REDIRECT, "state": "s", "code_challenge_method": "S256"},
    )
    assert parse_qs(urlsplit(r.headers["location"]).query)["error"] == ["access_denied"]

    r = token_post(sf, grant_type="authorization_code", code="nope", redirect_uri=REDIRECT)
    assert r.json() == {"error": "invalid_grant", "error_description": "invalid authorization code"}
    r = httpx.post(f"{sf.url}/services/oauth2/token", data={"grant_type": "refresh_token"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"


def test_five_approvals_evict_oldest(sf: FakeSalesforce) -> None:
    tokens = [login(sf) for _ in range(6)]
    live = sf.live_refresh_tokens(sf.login_as)
    assert live == [t["refresh_token"] for t in tokens[1:]]
    assert sf.evicted == [tokens[0]["refresh_token"]]
    r = token_post(sf, grant_type="refresh_token", refresh_token=tokens[0]["refresh_token"])
    assert r.status_code == 400
    assert r.json()["error_description"] == "expired access/refresh token"
    old_id = httpx.get(
        tokens[0]["id"], headers={"Authorization": f"Bearer {tokens[0]['access_token']}"}
    )
    assert old_id.status_code == 403


def test_refresh_keeps_refresh_token_unless_rotating(sf: FakeSalesforce) -> None:
    tok = login(sf)
    r = token_post(sf, grant_type="refresh_token", refresh_token=tok["refresh_token"])
    assert r.status_code == 200 and "refresh_token" not in r.json()
    assert r.json()["access_token"] != tok["access_token"]

    sf.rotate_refresh_tokens = True
    rotated = token_post(sf, grant_type="refresh_token", refresh_token=tok["refresh_token"]).json()
    assert sf.live_refresh_tokens(sf.login_as) == [rotated["refresh_token"]]

    sf.login_as.active = False
    r = token_post(sf, grant_type="refresh_token", refresh_token=rotated["refresh_token"])
    # A deactivated or frozen user: invalid_grant "inactive user" (restforce#303).
    assert r.json() == {"error": "invalid_grant", "error_description": "inactive user"}


def test_revoke_semantics(sf: FakeSalesforce) -> None:
    tok = login(sf)
    revoke = f"{sf.url}/services/oauth2/revoke"
    ident = httpx.get(tok["id"], headers={"Authorization": f"Bearer {tok['access_token']}"})
    assert ident.status_code == 200
    assert httpx.post(revoke, data={"token": tok["refresh_token"]}).status_code == 200
    # The access token died with its refresh token.
    assert (
        httpx.post(revoke, data={"token": tok["access_token"]}).json()["error"] == "invalid_token"
    )
    assert sf.revoked == [tok["refresh_token"]]
    assert sf.live_refresh_tokens(sf.login_as) == []


def test_identity(sf: FakeSalesforce) -> None:
    tok = login(sf)
    r = httpx.get(tok["id"], headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.text) == (403, "Bad_OAuth_Token")
    body = httpx.get(tok["id"], headers={"Authorization": f"Bearer {tok['access_token']}"}).json()
    assert body["user_id"] == "005000000000001AAA" and body["user_type"] == "STANDARD"
    assert body["urls"]["query"] == f"{sf.url}/services/data/v{{version}}/query/"
    assert body["urls"]["custom_domain"] == sf.url
    sf.revoke_user_tokens(sf.login_as)
    assert (
        httpx.get(tok["id"], headers={"Authorization": f"Bearer {tok['access_token']}"}).status_code
        == 403
    )


def test_permission_query(sf: FakeSalesforce) -> None:
    sf.login_as.permissions["PermissionsModifyAllData"] = False
    tok = login(sf)
    url = f"{sf.url}/services/data/v62.0/query/"
    auth = {"Authorization": f"Bearer {tok['access_token']}"}
    q = "select PermissionsApiEnabled,  PermissionsModifyAllData\n FROM UserPermissionAccess"
    r = httpx.get(url, params={"q": q}, headers=auth)
    assert r.status_code == 200
    record = r.json()["records"][0]
    assert record["PermissionsApiEnabled"] is True and record["PermissionsModifyAllData"] is False

    sf.unsupported_fields = {"PermissionsModifyAllData"}
    err = httpx.get(url, params={"q": q}, headers=auth).json()[0]
    assert err["errorCode"] == "INVALID_FIELD"
    assert "No such column 'PermissionsModifyAllData'" in err["message"]
    assert "Column:31" in err["message"]
    expired = httpx.get(url, params={"q": q}, headers={"Authorization": "Bearer x"})
    assert expired.status_code == 401 and expired.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_salesforce_fault_injection(sf: FakeSalesforce) -> None:
    sf.fail_next("/services/oauth2/token", 503)
    r = token_post(sf, grant_type="refresh_token", refresh_token="x")
    assert r.status_code == 503 and r.json()["error"] == "unknown_error"
    sf.fail_next("/services/oauth2/token", 0)
    with pytest.raises(httpx.RemoteProtocolError):
        token_post(sf, grant_type="refresh_token", refresh_token="x")
    assert token_post(sf, grant_type="refresh_token", refresh_token="x").status_code == 400
    assert httpx.get(f"{sf.url}/nowhere").json()[0]["errorCode"] == "NOT_FOUND"


def test_slack_web_api(slack: FakeSlack) -> None:
    slack.add_user("U1", is_admin=True, name="ann")
    api = slack.api_url
    auth = {"Authorization": f"Bearer {slack.bot_token}"}
    r = httpx.post(api + "users.info", data={"user": "U1"}, headers=auth)
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.json()["user"]["is_admin"] is True
    assert httpx.post(api + "users.info", data={"user": "U9"}, headers=auth).json() == {
        "ok": False,
        "error": "user_not_found",
    }
    assert httpx.post(api + "auth.test").json()["error"] == "not_authed"

    im = httpx.post(api + "conversations.open", data={"users": "U1"}, headers=auth).json()
    dm = im["channel"]["id"]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    sent = httpx.post(
        api + "chat.postMessage", json={"channel": dm, "blocks": blocks}, headers=auth
    )
    assert sent.json()["ok"] and sent.json()["message"]["user"] == "U0BOT"
    assert slack.dms_to("U1")[0]["blocks"] == blocks

    slack.not_in_channel.add("C1")
    r = httpx.post(api + "chat.postMessage", data={"channel": "C1", "text": "x"}, headers=auth)
    assert r.json() == {"ok": False, "error": "not_in_channel"}

    slack.rate_limit_next("chat.postMessage", retry_after=3)
    r = httpx.post(api + "chat.postMessage", data={"channel": "C2", "text": "x"}, headers=auth)
    assert (r.status_code, r.headers["retry-after"], r.json()["error"]) == (429, "3", "ratelimited")
    assert len(slack.calls_to("chat.postMessage")) == 3 and len(slack.messages) == 1


def test_slack_sdk_client_compatibility(slack: FakeSlack) -> None:
    slack.add_user("U1", is_owner=True)
    client = WebClient(token=slack.bot_token, base_url=slack.api_url)
    assert client.auth_test()["user_id"] == "U0BOT"
    assert client.users_info(user="U1")["user"]["is_owner"] is True
    dm = client.conversations_open(users=["U1"])["channel"]["id"]
    ts = client.chat_postMessage(channel=dm, text="hello")["ts"]
    client.chat_update(channel=dm, ts=ts, text="edited")
    assert slack.messages_to(dm)[0]["text"] == "edited"
    slack.fail_next("chat.postMessage", "channel_not_found")
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=dm, text="again")
    assert caught.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError):
        WebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test()


def test_response_url_and_wait_for(slack: FakeSlack) -> None:
    url = slack.new_response_url()
    threading.Thread(target=lambda: httpx.post(url, json={"text": "done"})).start()
    assert slack.wait_for(lambda: slack.responses(url)) == [{"text": "done"}]
    for i in range(4):
        assert httpx.post(url, json={"n": i}).text == "ok"
    assert (httpx.post(url, json={}).status_code, httpx.post(url, json={}).text) == (
        404,
        "used_url",
    )
    assert httpx.post(f"{slack.url}/response/bogus", json={}).text == "invalid_url"
    with pytest.raises(AssertionError, match="not met within"):
        slack.wait_for(lambda: False, timeout=0.1)
