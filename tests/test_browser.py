"""The link flow in a real browser: Debian's Chromium, headless, driven by Playwright.

The admin opens the login link the bot DM'd, presses Continue, logs in and clicks Allow at
the (loopback, fake) Salesforce and lands on the bot's success page; or clicks Deny; or opens
a link that has expired. Every request stays on 127.0.0.1. Each step is photographed:
into pytest's tmp_path, or with UPDATE_SCREENSHOTS=1 into docs/screenshots/ (the README's).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from tests.support import ADMIN, start_link, text_of, wait_until

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
VIEWPORT = {"width": 1000, "height": 700}
PHONE = {"width": 360, "height": 740}

try:
    from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright
except ImportError:  # the test extras not installed
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None,
        reason="Playwright is not installed: pip install -e '.[test]' (or pip install "
        "playwright; no browser download needed)",
    ),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: apt-get install -y chromium (Debian's Chromium; "
        "Playwright's own browsers are never downloaded)",
    ),
]

# Proves the success page's inline script ran under its CSP: records window.close() calls,
# then lets the browser do what it does with them. Playwright injects it, beside the CSP.
RECORD_CLOSE = """
window.__closeCalls = 0;
const close = window.close.bind(window);
window.close = () => { window.__closeCalls += 1; close(); };
"""


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert sync_playwright is not None
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    # Chromium's sandbox needs user namespaces, which a container running as root lacks.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=[*args, "--disable-dev-shm-usage"]
    )
    yield browser
    browser.close()


class Tab:
    """One browser tab that may reach 127.0.0.1 only, and keeps what it saw."""

    def __init__(
        self, chromium: Browser, shots: Path, viewport: dict[str, int], mobile: bool = False
    ) -> None:
        # A mobile context lays out as a phone does: without a viewport meta, 980 px wide.
        self.context = chromium.new_context(
            viewport=viewport, locale="en-GB", is_mobile=mobile, has_touch=mobile
        )
        self.context.add_init_script(RECORD_CLOSE)
        self.refused: list[str] = []  # requests that would have left the machine
        self.requests: list[tuple[str, str]] = []  # (resource type, URL)
        self.console: list[str] = []
        self.context.route("**/*", self._only_loopback)
        self.page: Page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append((r.resource_type, r.url)))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.shots = shots

    def _only_loopback(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort()

    def shoot(self, name: str) -> Path:
        path = self.shots / name
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path


@pytest.fixture
def tab(chromium: Browser, shots: Path) -> Iterator[Tab]:
    opened = Tab(chromium, shots, VIEWPORT)
    yield opened
    opened.close()


@pytest.fixture
def salesforce_pages(salesforce: Any) -> Any:
    """The fake Salesforce with its login and approval pages, as a browser sees them."""
    salesforce.production.browser_pages = True
    return salesforce


def callback_url(bot: Any) -> re.Pattern[str]:
    return re.compile(re.escape(f"{bot.url}/salesforce/callback?") + ".*")


def log_in_at_salesforce(tab: Tab, username: str, shot: str | None = None) -> None:
    page = tab.page
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("Log in to Salesforce"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("a-password")
    if shot:
        tab.shoot(shot)
    page.get_by_role("button", name="Log In").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Allow Access?")


def assert_stayed_on_the_machine(tab: Tab, bot: Any) -> None:
    assert tab.refused == []
    bot_host = urlsplit(bot.url).netloc
    for kind, url in tab.requests:
        if urlsplit(url).netloc == bot_host:  # the bot's pages load nothing besides
            assert kind == "document", (kind, url)
    assert not [line for line in tab.console if "Content Security Policy" in line], tab.console


def test_an_admin_links_an_account_in_a_real_browser(
    tab, slack_client, salesforce_pages, slack, bot
):
    start = start_link(slack_client, "acme")
    page = tab.page
    page.goto(start.login_url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Link VCC account acme")
    continue_button = page.get_by_role("button", name="Continue to Salesforce Production")
    expect(continue_button).to_be_visible()
    tab.shoot("01-login-page.png")

    # By keyboard: the button takes the focus and shows it.
    page.keyboard.press("Tab")
    expect(continue_button).to_be_focused()
    outline = continue_button.evaluate("b => getComputedStyle(b).outlineStyle")
    assert outline == "solid"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(re.escape(salesforce_pages.production.url) + "/.*"))

    log_in_at_salesforce(tab, salesforce_pages.api_user.username, "02-salesforce-login.png")
    expect(page.get_by_text(salesforce_pages.api_user.username)).to_be_visible()
    tab.shoot("03-salesforce-allow.png")
    page.get_by_role("button", name="Allow").click()

    page.wait_for_url(callback_url(bot))
    expect(page.get_by_role("heading", level=1)).to_have_text("Linked — you can close this window")
    expect(page.get_by_text("VCC account acme is linked to Salesforce org")).to_be_visible()
    # The page asked to close itself; a tab the script did not open stays, and says why.
    assert page.evaluate("window.__closeCalls") == 1
    tab.shoot("04-linked.png")
    assert_stayed_on_the_machine(tab, bot)
    slack.wait_for(lambda: [m for m in slack.dms_to(ADMIN) if "Linked." in text_of(m)])


def test_deny_at_salesforce_shows_the_cancelled_page(tab, slack_client, salesforce_pages, bot):
    start = start_link(slack_client, "acme")
    page = tab.page
    page.goto(start.login_url)
    page.get_by_role("button", name="Continue to Salesforce Production").click()
    log_in_at_salesforce(tab, salesforce_pages.api_user.username)
    page.get_by_role("button", name="Deny").click()

    page.wait_for_url(re.compile(r".*[?&]error=access_denied.*"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Linking cancelled")
    expect(page.get_by_text("Run /vcc link to try again.")).to_be_visible()
    assert page.evaluate("window.__closeCalls") == 0  # an error page stays open
    tab.shoot("05-cancelled.png")
    assert_stayed_on_the_machine(tab, bot)


def test_an_expired_login_link_shows_what_to_do(tab, slack_client, bot):
    start = start_link(slack_client, "acme")
    with bot.runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE login_attempt SET expires_at = '2000-01-01 00:00:00'"))
    response = tab.page.goto(start.login_url)
    assert response is not None and response.status == 410
    expect(tab.page.get_by_role("heading", level=1)).to_have_text("Login link expired")
    expect(tab.page.get_by_text("Run /vcc link again.")).to_be_visible()
    tab.shoot("06-expired-link.png")
    assert_stayed_on_the_machine(tab, bot)


def test_the_login_page_fits_a_phone(chromium, shots, slack_client, bot):
    start = start_link(slack_client, "acme")
    phone = Tab(chromium, shots, PHONE, mobile=True)
    try:
        phone.page.goto(start.login_url)
        button = phone.page.get_by_role("button", name="Continue to Salesforce Production")
        box = button.bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] >= 44
        # Nothing wider than the screen: no sideways scrolling.
        width = phone.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"]
        phone.shoot("07-login-page-phone.png")
    finally:
        phone.close()


# ---- the demo: the Slack side played by a page, the whole flow in one browser ------------


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Any]:
    """`vcc-bot demo` as its command composes it, served in a thread of this process (so
    the test can reach its database), with the monitor's sweep every second."""
    from bot import demo as demos

    with demos.stand_ins() as fakes:
        running = demos.compose(fakes, tmp_path, interval=1)
        thread = threading.Thread(target=asyncio.run, args=(running.serve(),), daemon=True)
        thread.start()
        wait_until(
            lambda: running.bot_server.started and running.side_server.started, 15, "the demo"
        )
        try:
            yield running
        finally:
            running.stop()
            thread.join(timeout=15)
            running.runtime.db.dispose()


def say(page: Page, words: str) -> None:
    page.get_by_role("button", name="# vcc-admins").click()
    field = page.get_by_label("Message #vcc-admins")
    field.fill(words)
    field.press("Enter")


def pane(page: Page, name: str) -> Any:
    page.get_by_role("button", name=name).click()
    ids = {
        "# vcc-admins": "#channel-feed",
        "VCC · Messages": "#dm-feed",
        "VCC · Home": "#home-feed",
    }
    return page.locator(ids[name])


def login_through_salesforce(tab: Tab, demo: Any, environment: str = "Production") -> Page:
    """Open the DM'd login link (a new tab, as Slack opens it) and log in there."""
    dm = pane(tab.page, "VCC · Messages")
    link = dm.get_by_role("link", name=f"Log in to Salesforce {environment}").last
    with tab.context.expect_page() as opened:
        link.click()
    login = opened.value
    login.get_by_role("button", name=f"Continue to Salesforce {environment}").click()
    fake = demo.fakes.production if environment == "Production" else demo.fakes.sandbox
    expect(login.get_by_role("heading", level=1)).to_have_text(re.compile("Log in to Salesforce"))
    login.get_by_label("Username").fill(fake.login_as.username)
    login.get_by_label("Password").fill("a-password")
    login.get_by_role("button", name="Log In").click()
    expect(login.get_by_role("heading", level=1)).to_have_text("Allow Access?")
    return login


def allow_and_see_it_close(login: Page, demo: Any) -> None:
    """Allow; the success page closes its window, as VCC's own login does: a tab opened
    from a link (as Slack opens it) is one a script may close."""
    seen: list[str] = []
    login.on("framenavigated", lambda frame: seen.append(frame.url))
    with login.expect_event("close", timeout=15_000):
        login.get_by_role("button", name="Allow").click()
    assert any(url.startswith(f"{demo.bot_url}/salesforce/callback?") for url in seen), seen


def link_in_production(page: Page) -> None:
    """/vcc link acme in the channel, then Production on the bot's latest answer."""
    say(page, "/vcc link acme")
    page.locator("#channel-feed").get_by_role("button", name="Production").last.click()


def test_the_demo_links_an_account_from_vcc_link_to_linked_in_the_home_tab(tab, demo):
    page = tab.page
    page.goto(demo.side_url)
    say(page, "/vcc link acme")
    channel = page.locator("#channel-feed")
    expect(channel.get_by_text("Link VCC account acme to Salesforce.")).to_be_visible()
    tab.shoot("demo-01-vcc-link.png")
    channel.get_by_role("button", name="Production").click()
    expect(channel.get_by_text(re.compile("Check your DMs"))).to_be_visible()

    dm = pane(page, "VCC · Messages")
    expect(dm.get_by_role("link", name="Log in to Salesforce Production")).to_be_visible()
    tab.shoot("demo-02-login-dm.png")
    login = login_through_salesforce(tab, demo)
    allow_and_see_it_close(login, demo)

    # The DM tells how the login ended; the channel hears it; the Home tab shows it.
    expect(dm.get_by_text("vcc-api@acme.example").first).to_be_visible()
    channel = pane(page, "# vcc-admins")
    expect(channel.get_by_text(re.compile("was linked to Salesforce"))).to_be_visible()
    tab.shoot("demo-03-linked-notice.png")
    home = pane(page, "VCC · Home")
    expect(home.get_by_text("1 account")).to_be_visible()
    expect(home.get_by_text(re.compile("acme · 🟢 Linked"))).to_be_visible()
    expect(home.get_by_role("button", name="Check now")).to_be_visible()
    tab.shoot("demo-04-home.png")
    assert tab.refused == []


def test_the_demo_cancel_at_salesforce_and_unlink_with_its_warning(tab, demo):
    page = tab.page
    page.goto(demo.side_url)
    link_in_production(page)
    login = login_through_salesforce(tab, demo)
    login.get_by_role("button", name="Deny").click()
    expect(login.get_by_role("heading", level=1)).to_have_text("Linking cancelled")
    login.close()
    dm = pane(page, "VCC · Messages")
    expect(dm.get_by_text(re.compile("cancel", re.IGNORECASE)).first).to_be_visible()

    # Link it for real, then unlink: the warning, Slack's confirm dialog, the outcome.
    link_in_production(page)
    login = login_through_salesforce(tab, demo)
    allow_and_see_it_close(login, demo)
    say(page, "/vcc unlink acme")
    channel = page.locator("#channel-feed")
    expect(channel.get_by_text("Unlink VCC account acme from Salesforce?").first).to_be_visible()
    tab.shoot("demo-05-unlink-warning.png")
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    channel.get_by_role("button", name="Unlink").click()
    expect(channel.get_by_text(re.compile("is now Unlinked"))).to_be_visible()
    assert dialogs and "will stop looking up records" in dialogs[0]
    tab.shoot("demo-06-unlinked.png")
    assert tab.refused == []


def test_the_demo_an_expired_link_offers_send_me_a_new_link(tab, demo):
    page = tab.page
    page.goto(demo.side_url)
    link_in_production(page)
    dm = pane(page, "VCC · Messages")
    expect(dm.get_by_role("link", name="Log in to Salesforce Production")).to_be_visible()
    # Ten minutes pass: the sweep (every second in this demo) tells the DM it expired.
    with demo.runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE login_attempt SET expires_at = '2000-01-01 00:00:00'"))
    again = dm.get_by_role("button", name="Send me a new link")
    expect(again).to_be_visible(timeout=15_000)
    expect(dm.get_by_role("link", name="Log in to Salesforce Production")).to_have_count(0)
    tab.shoot("demo-07-expired-dm.png")
    again.click()
    login = login_through_salesforce(tab, demo)
    allow_and_see_it_close(login, demo)
    home = pane(page, "VCC · Home")
    expect(home.get_by_text(re.compile("acme · 🟢 Linked"))).to_be_visible()
    assert tab.refused == []
