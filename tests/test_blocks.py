"""The message and view builders keep within Slack's Block Kit limits, whatever they are given.

They are pure functions (data in, slack_sdk.models blocks out), so these tests call them
directly: the longest legal values (a 64-character VCC account id, an 80-character
Salesforce username, an 18-character org id), free text of any length from Salesforce, the
audit trail or what someone typed, and hostile characters. Every result is parsed again with
slack_sdk.models (which validates what it knows) and checked against the limits slack_sdk
does not check. What is too long is cut visibly: an ellipsis, or "… and N more".
"""

from __future__ import annotations

import inspect
import string
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot import blocks, ids, messages
from bot.domain import (
    AccountView,
    ApiUserLimit,
    AttemptProblem,
    AuditEntry,
    AuditKind,
    DatabaseDown,
    Environment,
    ForgedResponse,
    Health,
    HealthCheck,
    InvalidAccountId,
    InvalidMyDomain,
    LinkChanged,
    LinkError,
    LinkResult,
    LinkStatus,
    LoginCancelled,
    LoginContext,
    LoginLink,
    LoginLinkProblem,
    MissingPermissions,
    NotLinked,
    SalesforceDown,
    SalesforceLoginFailed,
)
from tests.support import text_of

# Slack's limits (Block Kit reference), checked here whether or not slack_sdk checks them.
MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
TEXT = 3000  # a section's text; any text object, a context element's included
HEADER = 150
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
BUTTON_URL = 3000
MODAL_TITLE = 24
CONFIRM = {"title": 100, "text": 300, "confirm": 30, "deny": 30}

# Building a message takes milliseconds, but a loaded machine may pause any example: no
# per-example deadline, so these tests fail only for what they check.
no_deadline = settings(deadline=None)

# ---- strategies: the longest legal values, and hostile ones --------------------------

ACCOUNT_CHARS = string.ascii_letters + string.digits + "._-"
# mrkdwn's control and formatting characters, mentions, entities, line breaks, emoji.
HOSTILE = "*_~`&<>@!#|:^\n\t;\u200b" + "é漢😀"

account_ids = st.one_of(
    st.text(ACCOUNT_CHARS, min_size=1, max_size=64),
    st.text(ACCOUNT_CHARS, min_size=64, max_size=64),
)
org_ids = st.text(string.ascii_letters + string.digits, min_size=18, max_size=18)
# A Salesforce username has an email's form and at most 80 characters; the bot shows
# whatever Salesforce returns, so hostile ones too.
usernames = st.one_of(
    st.text(string.ascii_letters + string.digits + "._-+@", min_size=1, max_size=80),
    st.text(string.ascii_letters + string.digits + "._-+@", min_size=80, max_size=80),
    st.text(HOSTILE + "a.", min_size=1, max_size=80),
)
free_text = st.one_of(
    st.text(max_size=200),
    st.text(HOSTILE + "ab ", min_size=1000, max_size=5000),
    st.text(string.ascii_letters + " ", min_size=1000, max_size=5000),
)
slack_users = st.from_regex(r"U[A-Z0-9]{8,11}", fullmatch=True)
slack_channels = st.from_regex(r"C[A-Z0-9]{8,11}", fullmatch=True)
times = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
permission_names = st.sampled_from(
    ["API Enabled", "Edit Tasks", "View All Users", "View All Data", "Modify All Data"]
)


@st.composite
def account_views(draw: st.DrawFn, status: LinkStatus | None = None) -> AccountView:
    return AccountView(
        team_id="T0001",
        account_id=draw(account_ids),
        status=status or draw(st.sampled_from(LinkStatus)),
        environment=draw(st.none() | st.sampled_from(Environment)),
        org_id=draw(st.none() | org_ids),
        sf_user_id=draw(st.none() | org_ids),
        sf_username=draw(st.none() | usernames),
        instance_url=draw(st.none() | st.just("https://acme.my.salesforce.com")),
        linked_by=draw(st.none() | slack_users),
        linked_at=draw(st.none() | times),
        notify_channel=draw(st.none() | slack_channels),
        warnings=draw(st.lists(permission_names | st.text(HOSTILE, max_size=200), max_size=30)),
        health=draw(st.sampled_from(Health)),
        health_reason=draw(st.none() | free_text),
        health_checked_at=draw(st.none() | times),
        api_user_links=draw(st.integers(0, 10)),
    )


audit_entries = st.builds(
    AuditEntry,
    event=st.sampled_from([k.value for k in AuditKind]) | st.text(HOSTILE, max_size=300),
    actor=slack_users | st.sampled_from(["cli", "monitor"]) | st.text(HOSTILE, max_size=300),
    at=times,
    team_id=st.just("T0001"),
    account_id=account_ids,
    org_id=st.none() | org_ids,
    sf_username=st.none() | usernames,
    detail=st.none() | free_text,
)

link_errors: st.SearchStrategy[LinkError] = st.one_of(
    st.builds(InvalidAccountId, free_text),
    st.builds(InvalidMyDomain, free_text, unprintable=st.booleans()),
    st.builds(LoginLinkProblem, st.sampled_from(AttemptProblem)),
    st.just(LoginCancelled()),
    st.builds(SalesforceLoginFailed, free_text, free_text),
    st.just(SalesforceDown()),
    st.builds(ForgedResponse),
    st.just(DatabaseDown()),
    st.builds(MissingPermissions, usernames, st.lists(permission_names | free_text, max_size=20)),
    st.builds(
        ApiUserLimit,
        usernames,
        st.lists(account_ids, max_size=100),
        st.integers(5, 1000),
        org_ids,
        org_ids,
    ),
    st.builds(NotLinked, account_ids),
    st.just(LinkChanged()),
)

# ---- the checks ----------------------------------------------------------------------


def _walk(node: Any) -> list[dict[str, Any]]:
    """Every dict in a block tree."""
    if isinstance(node, dict):
        return [node, *(found for value in node.values() for found in _walk(value))]
    if isinstance(node, list):
        return [found for item in node for found in _walk(item)]
    return []


def check_blocks(block_dicts: list[dict[str, Any]]) -> None:
    # slack_sdk validates what it knows when it builds a dict from the parsed blocks.
    reparsed = [block.to_dict() for block in Block.parse_all(block_dicts)]
    assert reparsed == block_dicts
    for node in _walk(block_dicts):
        kind = node.get("type")
        if kind in ("plain_text", "mrkdwn"):
            assert 0 < len(node["text"]) <= TEXT
        if kind == "section":
            assert len(node["text"]["text"]) <= TEXT
        if kind == "context":
            assert 0 < len(node["elements"]) <= 10
            assert all(len(e["text"]) <= TEXT for e in node["elements"])
        if kind == "header":
            assert len(node["text"]["text"]) <= HEADER
        if kind == "button":
            assert node["text"]["type"] == "plain_text"
            assert len(node["text"]["text"]) <= BUTTON_TEXT
            assert len(node.get("value", "")) <= BUTTON_VALUE
            assert len(node.get("url", "")) <= BUTTON_URL
            if "confirm" in node:
                for part, limit in CONFIRM.items():
                    assert node["confirm"][part]["type"] == "plain_text"
                    assert len(node["confirm"][part]["text"]) <= limit


def check_message(message: blocks.Message) -> dict[str, Any]:
    """The message as posted, after checking it against Slack's limits."""
    posted = message.kwargs()
    assert 0 < len(posted["text"]) <= TEXT
    assert 0 < len(posted["blocks"]) <= MESSAGE_BLOCKS
    check_blocks(posted["blocks"])
    return posted


def check_view(view: dict[str, Any]) -> None:
    View(**view).to_dict()  # validates title, submit, close, blocks and private_metadata
    assert 0 < len(view["blocks"]) <= VIEW_BLOCKS
    assert 0 < len(view["title"]["text"]) <= MODAL_TITLE
    check_blocks(view["blocks"])


def lines_of(posted: dict[str, Any]) -> list[str]:
    return text_of(posted).splitlines()


def at(day: int) -> datetime:
    return datetime(2025, 6, 30, 9, 30, tzinfo=UTC) - timedelta(days=day)


def linked_view(**changes: Any) -> AccountView:
    fields: dict[str, Any] = {
        "team_id": "T0001",
        "account_id": "acme",
        "status": LinkStatus.LINKED,
        "environment": Environment.PRODUCTION,
        "org_id": "00D5g000004ABCDEAW",
        "sf_username": "vcc-api@acme.example",
        "linked_by": "U0123ABCDEF",
        "linked_at": at(0),
    }
    return AccountView(**(fields | changes))


# ---- the reported case: /vcc history of a busy link ----------------------------------

REPORTED_ACCOUNT = "acme_corporation_emea_production_contact_centre_main_account_001"
REPORTED_USERNAME = (
    "vcc_contact_centre_api_user_emea@acme-corporation-emea-production-org.example.co"
)
REPORTED_HOST = "https://acme-corporation-emea-production--uat.sandbox.my.salesforce.com"


def reported_history() -> list[AuditEntry]:
    """Ten events of a link that broke three times (a sixth approval each time) and was
    relinked, with Salesforce's longest username and the longest account id."""
    revoked = messages.broken_reason(
        SalesforceLoginFailed("invalid_grant", "expired access/refresh token")
    )
    events = [
        (AuditKind.BROKEN, revoked),
        (AuditKind.RECOVERED, "relinked"),
        (AuditKind.LINK_COMPLETED, f"relinked at {REPORTED_HOST}"),
        (AuditKind.LINK_STARTED, REPORTED_HOST),
        (AuditKind.BROKEN, revoked),
        (AuditKind.RECOVERED, "relinked"),
        (AuditKind.LINK_COMPLETED, f"relinked at {REPORTED_HOST}"),
        (AuditKind.LINK_STARTED, REPORTED_HOST),
        (AuditKind.BROKEN, revoked),
        (AuditKind.LINK_COMPLETED, f"linked at {REPORTED_HOST}"),
    ]
    return [
        AuditEntry(
            event=kind.value,
            actor="U0123ABCDEF",
            at=at(day),
            team_id="T0001",
            account_id=REPORTED_ACCOUNT,
            org_id="00D5g000004ABCDEAW",
            sf_username=REPORTED_USERNAME,
            detail=detail,
        )
        for day, (kind, detail) in enumerate(events)
    ]


def test_the_history_of_ten_events_with_the_longest_names_is_shown_whole():
    assert len(REPORTED_ACCOUNT) == 64 and len(REPORTED_USERNAME) == 80
    entries = reported_history()
    assert len(entries) == 10

    posted = check_message(blocks.history(REPORTED_ACCOUNT, entries))

    # Split over sections rather than cut: every event is there, with every name whole.
    assert len(posted["blocks"]) > 1
    assert all(b["type"] == "section" for b in posted["blocks"])
    events = [line for line in lines_of(posted) if line.startswith("• ")]
    assert len(events) == 10
    assert all(REPORTED_USERNAME in line and "…" not in line for line in events)
    assert "(newest first)" in lines_of(posted)[1]
    assert REPORTED_ACCOUNT in text_of(posted)


@pytest.mark.parametrize("kind", list(AuditKind))
def test_every_audit_event_has_a_label_in_the_history(kind):
    entry = AuditEntry(kind.value, "U0123ABCDEF", at(0), "T0001", "acme", None, None, None)
    assert f"*{kind.value}*" not in blocks.history_line(entry).replace("\u200b", "")


# ---- every builder, with the longest and hostile values ------------------------------

BUILDERS_TESTED = {
    "link_prompt",
    "custom_domain_modal",
    "check_your_dms",
    "login_link",
    "linked_dm",
    "linked_notice",
    "failure",
    "login_dm_failed",
    "not_allowed",
    "history",
    "status",
    "recovered_notice",
    "approval_revoked_dm",
    "broken_notice",
    "unlink_warning",
    "unlinked_result",
    "unlinked_notice",
    "nothing_changed",
    "channel_unreachable",
    "help_message",
    "connected_app_refused_dm",
    "broken_group_notice",
    "recovered_group_notice",
    # The accounts overview, the notification channel, the broken-link DM (below).
    "home_view",
    "accounts_message",
    "channel_set",
    "channel_chosen_notice",
    "channel_refused",
    "broken_dm",
    # /vcc doctor: its limits and escaping are tested in tests/test_doctor.py.
    "doctor_report",
    # A login's end and a live check under way: tested in tests/test_login_messages.py.
    "login_closed_dm",
    "login_closed_reply",
    "checking",
}


def test_every_message_and_view_builder_is_tested_here():
    builders = {
        name
        for name, function in inspect.getmembers(blocks, inspect.isfunction)
        if function.__module__ == blocks.__name__
        and not name.startswith("_")
        and inspect.signature(function).return_annotation in ("Message", "dict[str, Any]")
    }
    assert builders == BUILDERS_TESTED


@no_deadline
@given(account_views())
def test_view_builders_keep_within_slacks_limits(view):
    check_message(blocks.link_prompt(view))
    check_message(blocks.recovered_notice(view))
    check_message(blocks.broken_notice(view))
    check_message(blocks.unlink_warning(view))
    check_message(blocks.unlinked_result(view))
    check_message(blocks.nothing_changed(view.account_id))
    check_message(blocks.unlinked_notice(view, by_user="U0123ABCDEF"))


@settings(no_deadline, max_examples=30)
@given(st.lists(account_views(LinkStatus.LINKED), min_size=1, max_size=120))
def test_grouped_notices_keep_within_slacks_limits_and_count_every_account(views):
    for builder in (blocks.broken_group_notice, blocks.recovered_group_notice):
        posted = check_message(builder(views))
        if len(views) > 1:
            assert f"{len(views)} VCC accounts" in posted["text"]
            named = [line for line in lines_of(posted) if line.startswith("• ")]
            assert len(named) == min(len(views), 40)
            if len(views) > 40:
                assert f"… and {len(views) - 40} more." in text_of(posted)


def test_a_group_of_one_is_the_single_notice():
    view = linked_view(health_reason="invalid_grant")
    assert blocks.broken_group_notice([view]) == blocks.broken_notice(view)
    assert blocks.recovered_group_notice([view]) == blocks.recovered_notice(view)


@no_deadline
@given(
    account_views(),
    st.none() | st.sampled_from(Health),
    st.none() | free_text,
    st.lists(audit_entries, max_size=3),
)
def test_status_keeps_within_slacks_limits(view, health, reason, history):
    check = (
        None
        if health is None
        else HealthCheck(view, health, reason, checked_at=at(0), reused=True, limited=True)
    )
    check_message(blocks.status(view, check, history=history))


@settings(no_deadline, max_examples=50)
@given(account_ids, st.lists(audit_entries, max_size=60))
def test_history_keeps_within_slacks_limits(account_id, entries):
    posted = check_message(blocks.history(account_id, entries))
    shown = [line for line in lines_of(posted) if line.startswith("• ")]
    assert len(shown) == min(len(entries), 40)


@no_deadline
@given(link_errors, st.none() | account_ids | free_text)
def test_failures_keep_within_slacks_limits(error, account_id):
    check_message(blocks.failure(error, account_id))


@no_deadline
@given(
    account_views(LinkStatus.LINKED),
    st.booleans(),
    st.lists(permission_names | free_text, max_size=30),
)
def test_link_results_keep_within_slacks_limits(view, relinked, unchecked):
    result = LinkResult(view, relinked, unchecked)
    check_message(blocks.linked_dm(result))
    check_message(blocks.linked_notice(result))


@no_deadline
@given(account_ids, st.sampled_from(Environment), st.text(max_size=200))
def test_login_messages_and_the_modal_keep_within_slacks_limits(account_id, environment, token):
    ctx = LoginContext("T0001", "U0123ABCDEF", account_id, environment, "C0123ABCDEF")
    url = f"https://vcc-bot.example.com/salesforce/login/{token}"
    check_message(blocks.login_link(LoginLink(ctx, url, timedelta(minutes=10))))
    check_message(blocks.check_your_dms(account_id, environment))
    metadata = f'{{"account": "{account_id}", "channel": "C0123ABCDEF", "response_url": ""}}'
    check_view(blocks.custom_domain_modal(account_id, metadata))


@no_deadline
@given(
    account_ids,
    st.lists(account_views(LinkStatus.LINKED), max_size=30),
    st.booleans(),
    free_text,
    slack_channels | st.text(HOSTILE, max_size=100),
)
def test_notices_and_dms_keep_within_slacks_limits(account_id, revoked, refused, error, channel):
    check_message(blocks.approval_revoked_dm(account_id, revoked, refused=refused))
    check_message(blocks.connected_app_refused_dm(revoked, error))
    check_message(blocks.login_dm_failed(error))
    check_message(blocks.channel_unreachable(channel, error))
    check_message(blocks.not_allowed("unlink VCC accounts"))
    check_message(blocks.help_message())


# ---- what is cut is cut visibly ------------------------------------------------------


def test_a_long_typed_value_in_a_failure_is_cut_with_an_ellipsis():
    typed = "x" * 10_000
    posted = check_message(blocks.failure(InvalidAccountId(typed), typed))
    section = posted["blocks"][0]["text"]["text"]
    assert "…" in section
    assert "x" * 63 + "…" in section  # the account id in the heading, cut to an id's length
    assert "x" * 2000 not in section
    assert "…" in posted["text"]


def test_a_long_salesforce_error_description_is_cut_with_an_ellipsis():
    error = SalesforceLoginFailed("invalid_request", "the description is long " * 500)
    posted = check_message(blocks.failure(error, "acme"))
    section = posted["blocks"][0]["text"]["text"]
    assert section.startswith(":x: *Salesforce refused the login* (VCC account *acme*)")
    assert "the description is long" in section and section.rstrip().endswith("…")


def test_a_long_health_reason_is_cut_with_an_ellipsis():
    view = linked_view(health=Health.BROKEN, health_reason="Salesforce said no. " * 1000)
    check = HealthCheck(view, Health.BROKEN, "Salesforce said no. " * 1000, checked_at=at(0))
    for message in (blocks.status(view, check), blocks.status(view), blocks.broken_notice(view)):
        posted = check_message(message)
        assert "Salesforce said no." in text_of(posted)
        assert "…" in text_of(posted)


def test_a_history_too_long_for_one_message_says_how_many_events_are_not_shown():
    entry = reported_history()[0]
    posted = check_message(blocks.history(REPORTED_ACCOUNT, [entry] * 100))
    assert sum(line.startswith("• ") for line in lines_of(posted)) == 40
    last = posted["blocks"][-1]
    assert last["type"] == "context"
    assert last["elements"][0]["text"].startswith("… and 60 more")


def test_a_long_audit_detail_is_cut_with_an_ellipsis_and_its_event_still_shown():
    entry = reported_history()[0]
    long_detail = AuditEntry(**{**entry.__dict__, "detail": "a very long detail " * 500})
    posted = check_message(blocks.history("acme", [long_detail, entry]))
    events = [line for line in lines_of(posted) if line.startswith("• ")]
    assert len(events) == 2
    assert "Found broken" in events[0] and events[0].endswith("…")


def test_hostile_values_that_escaping_multiplies_still_fit_and_show_a_cut():
    # Each & becomes &amp;: five characters for one. Cutting must not split an entity.
    hostile = AuditEntry(
        event=AuditKind.LINK_REFUSED.value,
        actor="&" * 80,
        at=at(0),
        team_id="T0001",
        account_id="acme",
        org_id=None,
        sf_username="&" * 80,
        detail="<&>" * 1000,
    )
    posted = check_message(blocks.history("acme", [hostile] * 10))
    for block in posted["blocks"]:
        body = block["text"]["text"]
        assert "<@" not in body and "<!" not in body.replace("<!date^", "")
    assert "…" in text_of(posted)
    for block in posted["blocks"]:
        body = block["text"]["text"].replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")
        assert "&" not in body  # no entity cut in two


def test_long_lists_end_with_how_many_more():
    revoked = [linked_view(account_id=f"account-{n:02}") for n in range(25)]
    posted = check_message(blocks.approval_revoked_dm("acme", revoked, refused=False))
    assert "*account-09*" in text_of(posted)
    assert "account-10" not in text_of(posted)
    assert "… and 15 more" in text_of(posted)

    view = linked_view(warnings=[f"Permission {n}" for n in range(12)])
    posted = check_message(blocks.linked_dm(LinkResult(view, False, ["Extra"] * 14)))
    assert "Permission 9 … and 2 more." in text_of(posted)
    assert "Extra … and 4 more." in text_of(posted)


@no_deadline
@given(account_ids, usernames.filter(lambda u: not set(u) & set("&<>\u200b")), org_ids)
def test_legal_names_are_never_cut(account_id, username, org_id):
    view = linked_view(account_id=account_id, sf_username=username, org_id=org_id)
    for message in (blocks.status(view), blocks.linked_notice(LinkResult(view, False, []))):
        shown = text_of(check_message(message))
        assert account_id in shown and username in shown and org_id in shown


# ---- the unlink confirmation dialog ---------------------------------------------------


@pytest.mark.parametrize("account_id", ["acme", "a" * 64, "acme_uk.prod-1"])
def test_the_unlink_confirm_dialog_is_all_plain_text(account_id):
    posted = check_message(blocks.unlink_warning(linked_view(account_id=account_id)))
    unlink = next(
        e
        for b in posted["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if "confirm" in e
    )
    assert unlink["confirm"] == {
        "title": {"type": "plain_text", "text": "Unlink from Salesforce?"},
        "text": {
            "type": "plain_text",
            "text": f"VCC account {account_id} will stop looking up records and logging "
            "calls in Salesforce. The stored token is revoked at Salesforce.",
        },
        "confirm": {"type": "plain_text", "text": "Unlink"},
        "deny": {"type": "plain_text", "text": "Keep the link"},
        "style": "danger",
    }


# ---- the accounts overview, the notification channel, the broken-link DM ----------------


def check_home(view: dict[str, Any]) -> None:
    assert view["type"] == "home"
    assert 0 < len(view["blocks"]) <= VIEW_BLOCKS
    check_blocks(view["blocks"])
    block_ids = [b["block_id"] for b in view["blocks"] if "block_id" in b]
    assert len(block_ids) == len(set(block_ids))  # Slack refuses a view repeating one


@settings(no_deadline, max_examples=30)
@given(st.lists(account_views(), max_size=60, unique_by=lambda v: v.account_id), st.booleans())
def test_the_home_tab_keeps_within_slacks_limits_on_every_page(views, admin):
    pages = blocks.home_pages(len(views))
    for page in range(pages):
        check_home(blocks.home_view(views, admin=admin, page=page, notice="*done*"))
    shown = [
        b["block_id"].removeprefix("vcc_home_")
        for page in range(pages)
        for b in blocks.home_view(views, admin=True, page=page)["blocks"]
        if b.get("block_id", "").startswith("vcc_home_") and b["block_id"] != "vcc_home_pages"
    ]
    assert sorted(shown) == sorted(v.account_id for v in views)  # each once, on some page


def test_the_home_tab_shows_broken_links_first_and_buttons_to_admins_only():
    broken = linked_view(account_id="zeta", health=Health.BROKEN, health_reason="invalid_grant")
    views = [linked_view(account_id="alpha"), broken]
    admin = blocks.home_view(views, admin=True)
    text = text_of(admin)
    assert text.index("*zeta*") < text.index("*alpha*")
    assert "Broken: invalid_grant" in text
    assert any(b["type"] == "actions" for b in admin["blocks"])
    member = blocks.home_view(views, admin=False)
    assert not any(b["type"] == "actions" for b in member["blocks"])
    assert "read-only" in text_of(member)


@settings(no_deadline, max_examples=30)
@given(st.lists(account_views(), max_size=80, unique_by=lambda v: v.account_id))
def test_the_accounts_list_keeps_within_slacks_limits(views):
    posted = check_message(blocks.accounts_message(views))
    if len(views) > blocks.ACCOUNTS_MOST:
        assert f"and {len(views) - blocks.ACCOUNTS_MOST} more" in text_of(posted)


@settings(no_deadline, max_examples=30)
@given(st.lists(account_views(LinkStatus.LINKED), min_size=1, max_size=60))
def test_the_broken_link_dm_keeps_within_slacks_limits_with_a_relink_each(views):
    posted = check_message(blocks.broken_dm(views))
    relinks = [
        b["accessory"]["value"]
        for b in posted["blocks"]
        if b.get("accessory", {}).get("action_id") == ids.RELINK
    ]
    assert relinks == [v.account_id for v in views[:40]]


@given(account_ids, slack_channels, slack_users)
def test_the_channel_messages_escape_what_they_show(account_id, channel, user):
    view = linked_view(account_id=account_id, notify_channel=channel)
    for message in (
        blocks.channel_set(view),
        blocks.channel_chosen_notice(account_id, user),
        blocks.channel_refused(channel, "not_in_channel"),
    ):
        check_message(message)
