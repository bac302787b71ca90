"""The browser's side of the web app: health, login link problems, cookie and page headers."""

from __future__ import annotations

import asyncio
import secrets
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from bot.web import create_web_app
from storage.db import Database, create_db_engine
from tests.support import RunningBot, SlackClient, link, open_login, start_link

UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:1/nope"


def test_healthz_answers_ok_while_the_database_answers(bot):
    response = httpx.get(f"{bot.url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json()["ok"] is True


def test_healthz_is_503_when_the_database_does_not_answer(bot):
    db = Database(create_db_engine(UNREACHABLE_DB))
    app = create_web_app(
        login=bot.runtime.login,
        public_url=bot.url,
        ready=db.ready,
        bolt=None,
        signing_secret="x",
        cookie_secure=False,
    )

    async def get_health():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            return await client.get("/healthz")

    try:
        response = asyncio.run(get_health())
    finally:
        db.dispose()
    assert response.status_code == 503
    assert response.json()["ok"] is False


@pytest.mark.parametrize(
    "token", ["garbage", secrets.token_urlsafe(32)], ids=["malformed", "well-formed"]
)
def test_a_login_link_that_was_never_issued_is_not_valid(token, bot, browser):
    page = browser.get(f"{bot.url}/salesforce/login/{token}")
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "This login link is not valid" in page.text
    assert "set-cookie" not in page.headers


def test_a_login_link_opened_after_its_expiry_has_expired(slack_client, browser, bot):
    start = start_link(slack_client, "acme")
    with bot.runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE login_attempt SET expires_at = '2000-01-01 00:00:00'"))
    page = open_login(browser, start.login_url)
    assert page.status_code == 410
    assert "has expired" in page.text


def test_a_login_link_works_only_in_the_browser_that_opened_it_first(slack_client, browser):
    start = start_link(slack_client, "acme")
    assert open_login(browser, start.login_url).status_code == 303
    with httpx.Client(timeout=10) as other:
        page = open_login(other, start.login_url)
    assert page.status_code == 403
    assert "another browser" in page.text
    assert open_login(browser, start.login_url).status_code == 303  # e.g. a closed tab


def test_the_browser_cookie_is_secure_when_public_url_is_https(settings, slack, browser):
    https_settings = settings.model_copy(
        update={"public_url": f"https://127.0.0.1:{settings.port}"}
    )
    running = RunningBot(https_settings).start()
    # TLS would end at a proxy in front of the bot: Slack and the browser reach it over http.
    plain = f"http://127.0.0.1:{settings.port}"
    slack_client = SlackClient(SimpleNamespace(url=plain), slack)
    try:
        start = start_link(slack_client, "acme")
        assert start.login_url.startswith(f"https://127.0.0.1:{settings.port}/salesforce/login/")
        # The browser is on the https page (behind the proxy) when it clicks the button.
        response = browser.post(
            plain + urlsplit(start.login_url).path,
            headers={"Origin": f"https://127.0.0.1:{settings.port}"},
        )
    finally:
        slack_client.http.close()
        running.stop()
    assert response.status_code == 303
    cookie = [part.strip().lower() for part in response.headers["set-cookie"].split(";")]
    assert "secure" in cookie and "httponly" in cookie


def test_a_callback_without_state_is_refused(bot, browser):
    page = browser.get(f"{bot.url}/salesforce/callback", params={"code": "aPrx123"})
    assert page.status_code == 400
    assert "not valid" in page.text


def test_a_callback_with_a_made_up_state_is_not_valid(bot, browser):
    state = secrets.token_urlsafe(32)
    page = browser.get(f"{bot.url}/salesforce/callback", params={"code": "aPrx", "state": state})
    assert page.status_code == 400
    assert "This login link is not valid" in page.text


@pytest.mark.parametrize("path", ["/salesforce/login/garbage", "/salesforce/callback"])
def test_error_pages_carry_the_protective_headers(path, bot, browser):
    assert_protective_headers(browser.get(f"{bot.url}{path}"))


def test_the_linked_page_carries_the_protective_headers(slack_client, browser):
    page = link(slack_client, browser, "acme")
    assert page.status_code == 200
    assert_protective_headers(page)


def assert_protective_headers(page: httpx.Response) -> None:
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
