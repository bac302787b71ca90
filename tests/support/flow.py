"""Steps of the link flow as an admin performs them, shared by the end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from bot import ids
from tests.fakes import FakeSlack
from tests.support.constants import ADMIN, CHANNEL
from tests.support.messages import buttons
from tests.support.slack_client import SlackClient


@dataclass
class LoginStart:
    login_url: str
    dm: dict[str, Any]
    check_dms: dict[str, Any]


def start_link(
    slack_client: SlackClient,
    account: str = "",
    *,
    environment: str = "production",
    user: str = ADMIN,
    team: str | None = None,
    channel: str = CHANNEL,
) -> LoginStart:
    """`/vcc link`, click the environment, read the login link from the DM."""
    fake: FakeSlack = slack_client.fake
    url = slack_client.command(f"link {account}".strip(), user=user, team=team, channel=channel)
    prompt = slack_client.replies(url)[0]
    action = ids.LINK_PRODUCTION if environment == "production" else ids.LINK_SANDBOX
    value = buttons(prompt)[action]["value"]
    dms_before = len(fake.dms_to(user))
    click_url = slack_client.click(action, value, user=user, team=team, channel=channel)
    check_dms = slack_client.replies(click_url)[0]
    dms = fake.wait_for(lambda: len(fake.dms_to(user)) > dms_before and fake.dms_to(user))
    dm = dms[-1]
    login = buttons(dm)[ids.LOGIN_OPEN]["url"]
    return LoginStart(login_url=login, dm=dm, check_dms=check_dms)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def open_login(browser: httpx.Client, login_url: str) -> httpx.Response:
    """The admin opens the DM's link and clicks its button: the page, then a POST from it.

    Returns the POST's answer (303 to Salesforce), or the page itself when it shows an
    error instead of a button.
    """
    shown = browser.get(login_url)
    if shown.status_code != 200:
        return shown
    # A browser submitting the page's form sends the page's origin.
    return browser.post(login_url, headers={"Origin": origin(login_url)})


def through_salesforce(browser: httpx.Client, login_url: str) -> httpx.Response:
    """Open the link, log in at (fake) Salesforce, follow its redirect back: the final page."""
    first = open_login(browser, login_url)
    assert first.status_code == 303, first.text
    at_salesforce = browser.get(first.headers["location"])
    assert at_salesforce.status_code == 302, at_salesforce.text
    return browser.get(at_salesforce.headers["location"])


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def link(
    slack_client: SlackClient, browser: httpx.Client, account: str = "", **kw: Any
) -> httpx.Response:
    start = start_link(slack_client, account, **kw)
    return through_salesforce(browser, start.login_url)
