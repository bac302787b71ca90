"""The pages a browser sees: small, self-contained, readable on a phone, accessible, strict.

Every page is fetched from the running bot and read with the standard library's HTML parser;
colour contrast is computed from the page's own CSS, as WCAG 2.x defines it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from bot.domain import (
    ApiUserLimit,
    AttemptProblem,
    Busy,
    DatabaseDown,
    ForgedResponse,
    InvalidAccountId,
    InvalidMyDomain,
    LinkChanged,
    LinkError,
    LoginCancelled,
    LoginLinkProblem,
    MissingPermissions,
    NotLinked,
    SalesforceDown,
    SalesforceLoginFailed,
)
from bot.salesforce import CONNECTED_APP_ERRORS, UNEXPECTED
from bot.web import error_page
from tests.support import link, open_login, start_link

# What a next step sounds like on these pages: a command to run, someone to tell, or an
# action in Salesforce or the browser.
NEXT_STEP = re.compile(
    r"run /vcc (link|status)|try again|tell the bot's operator|open the (login )?link|grant them"
    r"|create another api user|use the button",
    re.IGNORECASE,
)
AA_TEXT = 4.5  # WCAG 2.x 1.4.3, normal text
AA_NON_TEXT = 3.0  # WCAG 2.1 1.4.11, e.g. a focus indicator


# ---- reading a page -----------------------------------------------------------------------


@dataclass
class Parsed:
    lang: str = ""
    h1: list[str] = field(default_factory=list)
    viewports: list[str] = field(default_factory=list)
    urls: list[tuple[str, str, str]] = field(default_factory=list)  # (tag, attribute, value)
    forms: list[dict[str, str | None]] = field(default_factory=list)
    buttons: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    svgs: list[dict[str, str | None]] = field(default_factory=list)
    text: str = ""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found = Parsed()
        self._open: list[str] = []
        self._texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found, named = self.found, dict(attrs)
        if tag == "html":
            found.lang = named.get("lang") or ""
        if tag == "meta" and named.get("name") == "viewport":
            found.viewports.append(named.get("content") or "")
        if tag == "form":
            found.forms.append(named)
        if tag == "svg":
            found.svgs.append(named)
        for name, value in attrs:
            if name in ("src", "href", "action", "formaction", "srcset", "poster", "data"):
                found.urls.append((tag, name, value or ""))
        if tag not in ("meta", "input", "br", "img", "link", "path", "circle"):
            self._open.append(tag)
        if tag in ("h1", "button", "script", "style"):
            self._texts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "button", "script", "style") and self._texts:
            content = self._texts.pop()
            {
                "h1": self.found.h1,
                "button": self.found.buttons,
                "script": self.found.scripts,
                "style": self.found.styles,
            }[tag].append(content.strip() if tag in ("h1", "button") else content)
        if tag in self._open:
            while self._open and self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._texts:
            self._texts[-1] += data
        if not {"script", "style", "title"} & set(self._open):
            self.found.text += data


def parse(page: httpx.Response) -> Parsed:
    reader = _Reader()
    reader.feed(page.text)
    reader.close()
    reader.found.text = " ".join(reader.found.text.split())
    return reader.found


def csp_of(page: httpx.Response) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in page.headers["content-security-policy"].split(";"):
        name, *values = part.split()
        assert name not in directives, f"{name} given twice: browsers ignore the second"
        directives[name] = values
    return directives


def sha256_source(source: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()}'"


# ---- colours ------------------------------------------------------------------------------


def css_rules(style: str) -> dict[str, dict[str, str]]:
    """selector -> declarations, @media blocks included (their rules apply at some width)."""
    flat = re.sub(r"@media[^{]*\{((?:[^{}]*\{[^{}]*\})*)\s*\}", r"\1", style)
    rules: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", flat):
        declarations = {}
        for declaration in body.split(";"):
            if ":" in declaration:
                name, value = declaration.split(":", 1)
                declarations[name.strip()] = value.strip()
        for selector in selectors.split(","):
            rules.setdefault(" ".join(selector.split()), {}).update(declarations)
    return rules


def luminance(colour: str) -> float:
    match = re.fullmatch(r"#([0-9a-f]{3}|[0-9a-f]{6})", colour.lower())
    assert match, f"{colour!r}: the pages' colours are #rgb or #rrggbb, so they can be checked"
    digits = match[1] if len(match[1]) == 6 else "".join(c * 2 for c in match[1])
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def background_of(declarations: dict[str, str]) -> str | None:
    value = declarations.get("background-color") or declarations.get("background")
    return value.split()[0] if value else None


def colour_pairs(style: str) -> list[tuple[str, str, str]]:
    """(selector, text colour, background) for every colour the stylesheet sets.

    All text sits on the card (`main`), unless a rule paints its own background; a rule that
    only repaints a button's background keeps the button's text colour.
    """
    rules = css_rules(style)
    card = background_of(rules["main"])
    assert card, "the card (main) sets its background"
    pairs = []
    for selector, declarations in rules.items():
        colour, background = declarations.get("color"), background_of(declarations)
        if colour is None and background is not None and selector.startswith("button"):
            colour = rules["button"]["color"]
        if colour is not None:
            pairs.append((selector, colour, background or card))
    return pairs


# ---- what every page must be --------------------------------------------------------------


def assert_sound_page(page: httpx.Response, bot_url: str, referrer: str = "no-referrer") -> Parsed:
    """Self-contained, phone-sized, accessible, strict: what every page of the bot must be."""
    assert page.headers["content-type"].startswith("text/html")
    found = parse(page)
    assert found.lang == "en"
    assert len(found.h1) == 1 and found.h1[0], found.h1
    assert len(found.viewports) == 1 and "width=device-width" in found.viewports[0]
    own = urlsplit(bot_url).netloc
    for tag, attribute, value in found.urls:  # nothing loaded or sent elsewhere
        parts = urlsplit(value)
        assert not parts.scheme and parts.netloc in ("", own), (tag, attribute, value)
    for form in found.forms:  # a form posts back to the page itself
        assert form.get("method") == "post" and not form.get("action"), form
    for svg in found.svgs:  # pictures are decoration: the words say it all
        assert svg.get("aria-hidden") == "true", svg

    csp = csp_of(page)
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    for script in found.scripts:
        assert csp["script-src"] == [sha256_source(script)]
    if not found.scripts:
        assert "script-src" not in csp  # default-src 'none': no script runs
    assert len(found.styles) == 1 and csp["style-src"] == [sha256_source(found.styles[0])]
    for name, value in [
        ("cache-control", "no-store"),
        ("referrer-policy", referrer),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
    ]:
        assert page.headers[name] == value

    style = found.styles[0]
    rules = css_rules(style)
    assert "max-width" in rules["main"]  # readable lines on a wide screen, full width on a phone
    for selector, colour, background in colour_pairs(style):
        ratio = contrast(colour, background)
        assert ratio >= AA_TEXT, f"{selector}: {colour} on {background} is {ratio:.2f}:1"
    if found.buttons:
        button = rules["button"]
        assert float(button["min-height"].removesuffix("px")) >= 44  # a tap target
        width, kind, colour = rules["button:focus-visible"]["outline"].split()
        assert float(width.removesuffix("px")) >= 2 and kind == "solid"
        assert contrast(colour, background_of(rules["main"]) or "") >= AA_NON_TEXT
    return found


def assert_error_page(page: httpx.Response, bot_url: str, status: int, words: str) -> None:
    assert page.status_code == status, page.text
    found = assert_sound_page(page, bot_url)
    assert words in found.text
    assert NEXT_STEP.search(found.text), f"no next step on {found.h1[0]!r}: {found.text}"
    assert not found.scripts


# ---- the pages, from the running bot ------------------------------------------------------


def test_the_login_page_is_one_button_that_posts_to_itself(slack_client, bot, salesforce):
    start = start_link(slack_client, "acme")
    page = httpx.get(start.login_url, timeout=10)
    assert page.status_code == 200
    # A browser then sends the button's POST with its Origin (under no-referrer: "null"),
    # and no Referer to Salesforce after it.
    found = assert_sound_page(page, bot.url, referrer="same-origin")
    assert found.h1 == ["Link VCC account acme"]
    assert found.buttons == ["Continue to Salesforce Production"]
    assert len(found.forms) == 1 and not found.scripts
    assert "directly as the API user" in found.text and "Log in as another user" in found.text
    # The POST's answer redirects to Salesforce: only that host may receive the form.
    assert csp_of(page)["form-action"] == ["'self'", salesforce.production.url]


def test_the_linked_page_closes_itself_or_says_the_window_can_be_closed(
    slack_client, browser, bot, salesforce
):
    page = link(slack_client, browser, "acme")
    assert page.status_code == 200, page.text
    found = assert_sound_page(page, bot.url)
    assert found.scripts == ["window.close()"]
    assert "you can close this window" in found.text.lower()
    assert salesforce.api_user.username in found.text and "acme" in found.text
    assert csp_of(page)["form-action"] == ["'none'"]


@pytest.mark.parametrize("token", ["garbage", "x" * 43], ids=["malformed", "never-issued"])
def test_an_unknown_login_link_says_what_to_do(token, bot, browser):
    page = browser.get(f"{bot.url}/salesforce/login/{token}")
    assert_error_page(page, bot.url, 400, "This login link is not valid")


def test_an_expired_login_link_says_what_to_do(slack_client, browser, bot):
    start = start_link(slack_client, "acme")
    with bot.runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE login_attempt SET expires_at = '2000-01-01 00:00:00'"))
    page = browser.get(start.login_url)
    assert_error_page(page, bot.url, 410, "has expired")
    assert parse(page).h1 == ["Login link expired"]


def test_a_link_opened_in_a_second_browser_says_what_to_do(slack_client, browser, bot):
    start = start_link(slack_client, "acme")
    assert open_login(browser, start.login_url).status_code == 303
    with httpx.Client(timeout=10) as other:
        page = open_login(other, start.login_url)
    assert_error_page(page, bot.url, 403, "another browser")


def test_a_used_callback_says_what_to_do(slack_client, browser, bot):
    start = start_link(slack_client, "acme")
    first = open_login(browser, start.login_url)
    callback = browser.get(first.headers["location"]).headers["location"]
    assert browser.get(callback).status_code == 200
    assert_error_page(browser.get(callback), bot.url, 409, "already used")


def test_a_post_from_another_site_says_what_to_do(slack_client, browser, bot):
    start = start_link(slack_client, "acme")
    page = browser.post(start.login_url, headers={"Origin": "https://elsewhere.example"})
    assert_error_page(page, bot.url, 403, "Open the login link from your Slack DM")


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        ("access_denied", 400, "You did not allow access in Salesforce"),
        ("invalid_scope", 400, "Salesforce answered invalid_scope"),
    ],
)
def test_a_refusal_at_salesforce_says_what_to_do(
    error, status, words, slack_client, browser, bot, salesforce
):
    salesforce.production.authorize_error = error
    assert_error_page(link(slack_client, browser, "acme"), bot.url, status, words)


def test_salesforce_not_answering_says_to_start_again_with_a_new_link(
    slack_client, browser, bot, salesforce
):
    salesforce.production.fail_next("/services/oauth2/token", 503)
    page = link(slack_client, browser, "acme")
    assert_error_page(page, bot.url, 400, "Salesforce could not be reached")
    assert "run /vcc link in Slack for a new login link" in parse(page).text


# ---- every error a page can show names a next step ----------------------------------------

# Errors that only Slack shows (typed input, /vcc unlink): never on a page.
SLACK_ONLY = {InvalidAccountId, InvalidMyDomain, NotLinked}
PAGE_ERRORS: list[LinkError] = [
    *(LoginLinkProblem(problem) for problem in AttemptProblem),
    LoginCancelled(),
    *(SalesforceLoginFailed(code, "described") for code in sorted(CONNECTED_APP_ERRORS)),
    SalesforceLoginFailed(UNEXPECTED),
    SalesforceLoginFailed("invalid_grant", "IP restricted or invalid login hours"),
    SalesforceLoginFailed("inactive_user"),
    SalesforceDown(),
    Busy(),
    DatabaseDown(),
    ForgedResponse(),
    MissingPermissions("vcc-api@acme.example", ["API Enabled", "Edit Tasks"]),
    ApiUserLimit("vcc-api@acme.example", ["acct-1"], 5, "00D", "005"),
    LinkChanged(),
]


def test_every_kind_of_error_a_page_can_show_is_checked():
    kinds = set()
    pending = [LinkError]
    while pending:
        kind = pending.pop()
        kinds.add(kind)
        pending.extend(kind.__subclasses__())
    checked = {type(error) for error in PAGE_ERRORS}
    assert kinds - {LinkError} - SLACK_ONLY == checked


@pytest.mark.parametrize("error", PAGE_ERRORS, ids=lambda e: f"{type(e).__name__}-{e}")
def test_every_error_page_says_what_happened_and_what_to_do_next(error):
    rendered = error_page(error)
    page = httpx.Response(
        rendered.status_code,
        headers=dict(rendered.headers),
        content=bytes(rendered.body),
        request=httpx.Request("GET", "http://127.0.0.1/salesforce/callback"),
    )
    assert page.status_code >= 400
    found = assert_sound_page(page, "http://127.0.0.1")
    assert found.h1[0] and found.h1[0] in found.text
    assert NEXT_STEP.search(found.text), f"no next step on {found.h1[0]!r}: {found.text}"


# ---- the checks themselves ----------------------------------------------------------------


def test_contrast_is_computed_as_wcag_defines_it():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # just fails AA
    assert contrast("#fff", "#ffffff") == pytest.approx(1.0)


def test_a_colour_too_faint_for_its_background_is_caught():
    style = "main{background:#ffffff}p{color:#999999}button{color:#ffffff;background:#00704f}"
    faint = [(s, c, b) for s, c, b in colour_pairs(style) if contrast(c, b) < AA_TEXT]
    assert faint == [("p", "#999999", "#ffffff")]
