"""Pure functions: data in, Slack messages (fallback text + Block Kit) out."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot import ids
from bot.domain import (
    MAX_ACCOUNTS_PER_API_USER,
    AccountView,
    AuditEntry,
    DoctorReport,
    Environment,
    Finding,
    Health,
    HealthCheck,
    LinkError,
    LinkResult,
    LinkStatus,
    LoginClosed,
    LoginEnd,
    LoginLink,
)
from bot.messages import API_USER_NEEDS, LOGIN_ADVICE, LOGIN_ERROR_HELP, describe

SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")
SLACK_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,20}")

# Slack's Block Kit limits. slack_sdk checks some when building (section text, header,
# button, confirm, modal title and blocks), not all: a context element's text and a
# message's block count are only refused by Slack, so the builders keep within them too.
TEXT_LIMIT = 3000  # any text object: a section's text, a context element's text
MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100

# How much of an outside value is shown. Legal values fit whole (a VCC account id is at
# most 64 characters, a Salesforce username 80, an org id 18); free text from Salesforce,
# the audit trail or what someone typed is cut, visibly, well within a section.
_ID = 64
_NAME = 80
_REASON = 500
_DETAIL = 1500  # a failure's explanation: our sentences around the values they name
_LIST_MOST = 10  # names listed on one line before "… and N more"
_HISTORY_MOST = 40  # events in /vcc history: one section each at worst, within 50 blocks


@dataclass(frozen=True)
class Message:
    text: str  # notification and screen-reader fallback
    blocks: list[dict[str, Any]]

    def kwargs(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}


def _message(text: str, blocks: list[Block]) -> Message:
    # to_dict() validates lengths, so an oversize field fails here, not at Slack.
    return Message(text=_fit(text), blocks=[b.to_dict() for b in blocks])


# Zero-width spaces after mrkdwn's formatting characters: a value cannot open or close
# bold, italics, strikethrough or code, and still looks the same.
_FORMATTING = str.maketrans({c: c + "\u200b" for c in "*_~`"})


def _said(text: str) -> Message:
    """A message of one section, its text also the notification's."""
    return _message(text, [_section(text)])


def escape(value: str) -> str:
    """Any value from outside (Salesforce, the command text, a CSV) for mrkdwn or for a
    message's fallback text: no mention, link, channel ping or formatting can come of it.

    Slack's mrkdwn treats &, < and > as control characters (its "Escaping text" section);
    it has no escape for * _ ~ `, hence the zero-width spaces.
    """
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").translate(_FORMATTING)
    )


def code(value: str) -> str:
    """A value shown inside `backticks`: nothing is formatted there; it must not close them."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def _clip(value: str, limit: int) -> str:
    """An outside value cut to `limit` characters, visibly: it then ends in an ellipsis.

    Cut before escaping, so no entity or zero-width space is split.
    """
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _shown(value: str, limit: int = _NAME) -> str:
    """An outside value for mrkdwn: cut to `limit` characters, then escaped."""
    return escape(_clip(value, limit))


def _fit(markdown: str, limit: int = TEXT_LIMIT) -> str:
    """Mrkdwn within Slack's limit, whatever the values in it: a last resort, since the
    builders cut each value first; escaping can still multiply a hostile value by five.

    Whole lines are kept when that keeps most of the text; otherwise the cut avoids
    splitting an entity (&amp;), a <…> token, or a formatting character from the zero-width
    space that neutralises it. The ellipsis shows that something is missing.
    """
    if len(markdown) <= limit:
        return markdown
    cut = markdown[: limit - 2]
    newline = cut.rfind("\n")
    if newline > limit // 2:
        return cut[:newline] + "\n…"
    for opener, closer in (("<", ">"), ("&", ";")):
        start = cut.rfind(opener)
        if start > cut.rfind(closer):
            cut = cut[:start]
    if markdown[len(cut)] == "\u200b":
        cut = cut[:-1]
    return cut + "…"


def _section(markdown: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=_fit(markdown)))


def _context(markdown: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=_fit(markdown))])


def _packed(lines: list[str], block: Callable[[str], Block]) -> list[Block]:
    """Lines in as few blocks as hold them, each block's text within Slack's limit: a long
    list is split across blocks instead of losing lines."""
    found: list[Block] = []
    chunk = ""
    for line in (_fit(line) for line in lines):
        if chunk and len(chunk) + 1 + len(line) > TEXT_LIMIT:
            found.append(block(chunk))
            chunk = line
        else:
            chunk = f"{chunk}\n{line}" if chunk else line
    if chunk:
        found.append(block(chunk))
    return found


def _listed(names: list[str], most: int = _LIST_MOST) -> str:
    """Names (already escaped) on one line: the first `most`, then how many more."""
    more = len(names) - most
    shown = ", ".join(names[:most])
    return f"{shown} … and {more} more" if more > 0 else shown


def _account(account_id: str) -> str:
    return _shown(account_id, _ID)


def _code(value: str) -> str:
    """An outside value for `backticks`, cut to an id's length."""
    return code(_clip(value, _ID))


def _channel(channel_id: str) -> str:
    return f"<#{channel_id}>" if SLACK_CHANNEL.fullmatch(channel_id) else _shown(channel_id, _ID)


def _when(value: datetime | None) -> str:
    if value is None:
        return "unknown time"
    epoch = int(value.timestamp())
    fallback = value.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{epoch}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _env(value: Environment | None) -> str:
    return value.label if value else "unknown environment"


def link_details(view: AccountView) -> str:
    lines = [
        f"*Org:* `{_code(view.org_id or '?')}` ({_env(view.environment)})",
        f"*API user:* {_shown(view.sf_username or '?')}",
    ]
    if view.linked_by:
        lines.append(f"*Linked by:* {_actor(view.linked_by)} on {_when(view.linked_at)}")
    return "\n".join(lines)


def _warnings(view: AccountView) -> list[Block]:
    if not view.warnings:
        return []
    return [
        _context(
            ":warning: Recommended for this API user but missing: "
            + _listed([_shown(w) for w in view.warnings])
            + ". VCC may not find every record, or Data Connector inserts may fail."
        )
    ]


# ---- /vcc link -----------------------------------------------------------------------


def link_prompt(view: AccountView) -> Message:
    account = _account(view.account_id)
    if view.status == LinkStatus.LINKED:
        intro = (
            f"VCC account *{account}* is already *Linked*.\n{link_details(view)}\n"
            "Choose an environment to *relink* it; the current link keeps working until "
            "the new one is made."
        )
        if view.api_user_full:
            intro += (
                f"\n:warning: Its API user already holds {MAX_ACCOUNTS_PER_API_USER} "
                "approvals (one per linked VCC account). Relinking with the same user is a "
                "sixth approval, and Salesforce then revokes that user's *oldest* one, which "
                "may belong to another VCC account. Relink with another API user, or unlink "
                "one of its accounts first."
            )
    elif view.status == LinkStatus.LEGACY:
        intro = (
            f"VCC account *{account}* is *Legacy* (linked by an older method). "
            "Relinking is recommended: choose the environment."
        )
    else:
        intro = (
            f"Link VCC account *{account}* to Salesforce. VCC uses the link to look up "
            "records and create a task at the end of every call. Choose where the org lives:"
        )
    verb = "Relink" if view.status != LinkStatus.UNLINKED else "Link"
    return _message(
        f"{verb} VCC account {_account(view.account_id)} to Salesforce",
        [
            _section(intro),
            ActionsBlock(
                block_id="vcc_link_env",
                elements=[
                    ButtonElement(
                        text="Production",
                        action_id=ids.LINK_PRODUCTION,
                        value=view.account_id,
                        style="primary",
                    ),
                    ButtonElement(
                        text="Sandbox", action_id=ids.LINK_SANDBOX, value=view.account_id
                    ),
                    ButtonElement(
                        text="Custom domain", action_id=ids.LINK_CUSTOM, value=view.account_id
                    ),
                ],
            ),
            _context(
                "I'll send you a Salesforce login link in a direct message. *Custom domain* "
                "is for orgs that block login.salesforce.com and test.salesforce.com: log in "
                "at your My Domain instead. " + API_USER_NEEDS
            ),
        ],
    )


def custom_domain_modal(account_id: str, private_metadata: str) -> dict[str, Any]:
    """The modal asking for the org's My Domain host."""
    return View(
        type="modal",
        callback_id=ids.CUSTOM_DOMAIN_VIEW,
        private_metadata=private_metadata,
        title="Custom domain",
        submit="Send login link",
        close="Cancel",
        blocks=[
            _section(
                f"Link VCC account *{_account(account_id)}* through your org's My Domain. "
                "Setup → My Domain shows it."
            ),
            InputBlock(
                block_id=ids.MY_DOMAIN_BLOCK,
                label="My Domain login host",
                element=PlainTextInputElement(
                    action_id=ids.MY_DOMAIN_INPUT,
                    placeholder="acme.my.salesforce.com",
                    max_length=255,
                ),
                hint="A sandbox: acme--uat.sandbox.my.salesforce.com",
            ),
        ],
    ).to_dict()


def check_your_dms(account_id: str, environment: Environment) -> Message:
    text = (
        f":envelope: Check your DMs: I sent you a {environment.label} login link for VCC "
        f"account *{_account(account_id)}*. This message will say how the login ends."
    )
    return _said(text)


def login_link(link: LoginLink) -> Message:
    ctx, url = link.context, link.url
    minutes = int(link.expires_in.total_seconds() // 60)
    return _message(
        f"Log in to Salesforce to link VCC account {_account(ctx.account_id)}",
        [
            HeaderBlock(text=PlainTextObject(text="Link VCC to Salesforce")),
            _section(
                f"Log in to Salesforce *{ctx.environment.label}* to link VCC account "
                f"*{_account(ctx.account_id)}*, then click *Allow*.\n\n"
                f":bust_in_silhouette: {LOGIN_ADVICE}"
            ),
            ActionsBlock(
                elements=[
                    ButtonElement(
                        text=f"Log in to Salesforce {ctx.environment.label}",
                        action_id=ids.LOGIN_OPEN,
                        url=url,
                        style="primary",
                    )
                ]
            ),
            _context(
                f":hourglass: This link expires in {minutes} minutes and works once, in one "
                "browser; then this message says how the login ended.\n"
                f":key: {API_USER_NEEDS}"
            ),
            _context(f":warning: {LOGIN_ERROR_HELP}"),
        ],
    )


def linked_dm(result: LinkResult) -> Message:
    view = result.account
    verb = "Relinked" if result.relinked else "Linked"
    blocks: list[Block] = [
        _section(
            f":white_check_mark: *{verb}.* VCC account *{_account(view.account_id)}* now uses "
            f"Salesforce.\n{link_details(view)}"
        ),
        *_warnings(view),
    ]
    if result.unchecked:
        blocks.append(
            _context(
                "This org would not let me check: "
                + _listed([_shown(name) for name in result.unchecked])
                + ". Please check them on the API user's profile or permission sets."
            )
        )
    return _message(f"{verb} VCC account {_account(view.account_id)} to Salesforce", blocks)


def linked_notice(result: LinkResult) -> Message:
    view = result.account
    verb = "relinked" if result.relinked else "linked"
    text = (
        f":link: VCC account *{_account(view.account_id)}* was {verb} to Salesforce org "
        f"`{_code(view.org_id or '?')}` ({_env(view.environment)}) as API user "
        f"{_shown(view.sf_username or '?')} by {_actor(view.linked_by or '?')}."
    )
    return _message(
        f"VCC account {_account(view.account_id)} was {verb} to Salesforce", [_section(text)]
    )


def failure(error: LinkError, account_id: str | None = None) -> Message:
    # The explanation names what Salesforce said or what someone typed: any length.
    title, detail = describe(error)
    title, detail = _shown(title, _NAME), _shown(detail, _DETAIL)
    about = f" (VCC account *{_account(account_id)}*)" if account_id else ""
    return _message(f"{title}: {detail}", [_section(f":x: *{title}*{about}\n{detail}")])


def login_dm_failed(error: str) -> Message:
    text = (
        f":warning: I could not send you the login link in a DM (Slack said {_shown(error)}). "
        "Nothing was linked; run `/vcc link` again."
    )
    return _said(text)


# Ends after which trying again makes sense: the ended DM offers a new link. Not after a
# link (a relink is /vcc link's, with its warnings) nor an unlink (someone chose it).
_TRY_AGAIN = {LoginEnd.CANCELLED, LoginEnd.REFUSED, LoginEnd.EXPIRED, LoginEnd.USED}


def _unfinished(closed: LoginClosed) -> tuple[str, str]:
    """Fallback text and mrkdwn for a login that ended with no result to show."""
    ctx = closed.context
    account, env = _account(ctx.account_id), ctx.environment.label
    if closed.end is LoginEnd.EXPIRED:
        return f"The login link for VCC account {account} expired", (
            f":hourglass: *Login link expired.* The {env} login link for VCC account "
            f"*{account}* expired {_when(closed.expires_at)} without being used. Nothing "
            "was linked."
        )
    return f"The login link for VCC account {account} was used", (
        f":grey_question: *Login link used.* The {env} login link for VCC account "
        f"*{account}* was used, but I could not tell how that login ended. "
        f"`/vcc status {_code(ctx.account_id)}` shows whether the account is linked."
    )


def login_closed_dm(closed: LoginClosed) -> Message:
    """The login DM once its login ended: what happened, and never the old login button;
    where trying again makes sense, "Send me a new link" instead."""
    account_id = closed.context.account_id
    if closed.result is not None:
        return linked_dm(closed.result)
    if closed.end in (LoginEnd.EXPIRED, LoginEnd.USED):
        fallback, text = _unfinished(closed)
        ended = _message(fallback, [_section(text)])
    else:  # cancelled, refused or withdrawn: the error says why, in plain words
        ended = failure(closed.error or LinkError(), account_id)
    if closed.end not in _TRY_AGAIN:
        return ended
    again = ActionsBlock(
        elements=[
            ButtonElement(
                text="Send me a new link",
                action_id=ids.LOGIN_AGAIN,
                value=str(closed.attempt_id),
                style="primary",
            )
        ]
    )
    return Message(text=ended.text, blocks=[*ended.blocks, again.to_dict()])


def login_closed_reply(closed: LoginClosed) -> Message:
    """What replaces "Check your DMs" once the login ended (the DM has the details)."""
    ctx = closed.context
    if closed.result is not None:
        view = closed.result.account
        verb = "relinked" if closed.result.relinked else "linked"
        text = (
            f":white_check_mark: VCC account *{_account(view.account_id)}* is {verb} to "
            f"Salesforce org `{_code(view.org_id or '?')}` ({_env(view.environment)}) as API "
            f"user {_shown(view.sf_username or '?')}."
        )
        return _said(text)
    if closed.end in (LoginEnd.EXPIRED, LoginEnd.USED):
        fallback, text = _unfinished(closed)
        if closed.end is LoginEnd.EXPIRED:
            text += f" Your DMs offer a new link, or run `/vcc link {_code(ctx.account_id)}`."
        return _message(fallback, [_section(text)])
    return failure(closed.error or LinkError(), ctx.account_id)


def checking(account_id: str) -> Message:
    """Shown in place of a status while its live check runs."""
    text = (
        f":hourglass_flowing_sand: Checking VCC account *{_account(account_id)}* with Salesforce…"
    )
    return _said(text)


def not_allowed(action: str) -> Message:
    text = (
        f":no_entry: Only workspace admins and owners, or users listed in VCC_ADMIN_USERS, "
        f"can {action}. Nothing changed."
    )
    return _said(text)


# ---- /vcc status ---------------------------------------------------------------------

_HEALTH_LINE = {
    Health.HEALTHY: ":large_green_circle: Checked with Salesforce: the link works.",
    Health.BROKEN: ":red_circle: *Broken:* {reason}\nRelink with `/vcc link {account}`.",
    Health.UNKNOWN: ":grey_question: Could not check the link: {reason} "
    "This does not mean the link is broken.",
}


_EVENT_LABELS = {
    "link_started": "Link started",
    "link_completed": "Linked",
    "link_refused": "Link refused",
    "link_cancelled": "Link cancelled",
    "unlinked": "Unlinked",
    "broken": "Found broken",
    "recovered": "Recovered",
    "legacy_imported": "Imported as Legacy",
    "notice_failed": "Channel notice not delivered",
    "channel_set": "Notification channel set",
}


def _actor(actor: str) -> str:
    return f"<@{actor}>" if SLACK_USER.fullmatch(actor) else _shown(actor)


def history_line(entry: AuditEntry) -> str:
    label = _EVENT_LABELS.get(entry.event) or _shown(entry.event)
    who = _actor(entry.actor)
    user = f" · {_shown(entry.sf_username)}" if entry.sf_username else ""
    # The full detail stays in the audit trail (vcc-bot audit); a line shows its start.
    detail = f": {_shown(entry.detail, _REASON)}" if entry.detail else ""
    return f"{_when(entry.at)} · *{label}* by {who}{user}{detail}"


def _history(entries: list[AuditEntry], limit: int = 3) -> list[Block]:
    if not entries:
        return []
    return _packed(["*Recent history*", *(history_line(e) for e in entries[:limit])], _context)


def history(account_id: str, entries: list[AuditEntry]) -> Message:
    if not entries:
        text = f"No history yet for VCC account *{_account(account_id)}*."
        return _said(text)
    # Every event shown, over several sections when one would pass Slack's text limit.
    lines = [f"*History of VCC account {_account(account_id)}* (newest first)"]
    lines += [f"• {history_line(e)}" for e in entries[:_HISTORY_MOST]]
    blocks = _packed(lines, _section)
    more = len(entries) - _HISTORY_MOST
    if more > 0:
        blocks.append(
            _context(
                f"… and {more} more: `vcc-bot audit --account {_code(account_id)}` lists them all."
            )
        )
    return _message(f"History of VCC account {_account(account_id)}", blocks)


def status(
    view: AccountView,
    check: HealthCheck | None = None,
    *,
    history: list[AuditEntry] | None = None,
) -> Message:
    account = _account(view.account_id)
    history = history or []
    blocks: list[Block] = []
    if view.status == LinkStatus.UNLINKED:
        blocks.append(
            _section(
                f"VCC account *{account}* is *Unlinked*. Link it with "
                f"`/vcc link {_code(view.account_id)}`."
            )
        )
        blocks += _history(history)
        return _message(f"VCC account {_account(view.account_id)}: Unlinked", blocks)
    if view.status == LinkStatus.LEGACY:
        blocks.append(
            _section(
                f"VCC account *{account}* is *Legacy*: linked by an older method. "
                "Relink recommended.\n"
                f"*API user:* {_shown(view.sf_username or '?')} ({_env(view.environment)})"
            )
        )
        blocks.append(
            ActionsBlock(
                elements=[
                    ButtonElement(
                        text="Relink", action_id=ids.RELINK, value=view.account_id, style="primary"
                    )
                ]
            )
        )
        blocks += _history(history)
        return _message(
            f"VCC account {_account(view.account_id)}: Legacy (relink recommended)", blocks
        )
    blocks += [_section(f"VCC account *{account}* is *Linked*.\n{link_details(view)}")]
    blocks += _warnings(view)
    if check is not None:
        line = _HEALTH_LINE[check.health].format(
            reason=_shown(check.reason or "unknown reason.", _REASON),
            account=_code(view.account_id),
        )
        blocks.append(_section(line))
    elif view.health == Health.BROKEN:
        line = _HEALTH_LINE[Health.BROKEN].format(
            reason=_shown(view.health_reason or "unknown", _REASON), account=_code(view.account_id)
        )
        blocks.append(_section(line))
    checked_at = check.checked_at if check is not None else None
    checked_at = checked_at or view.health_checked_at
    if checked_at:
        reused = " (a recent check's result: Salesforce was not asked again)"
        suffix = reused if check is not None and check.reused else ""
        blocks.append(_context(f"Last checked {_when(checked_at)}{suffix}"))
    if check is not None and check.limited:
        blocks.append(
            _context(
                ":hourglass: You asked for several live checks in the last minute, and each "
                "costs the org Salesforce API calls: this is the last result. Ask again in "
                "a minute for a new check."
            )
        )
    # A click's response_url may replace this message with the new result.
    blocks.append(
        ActionsBlock(
            elements=[
                ButtonElement(text="Check now", action_id=ids.CHECK_NOW, value=view.account_id)
            ]
        )
    )
    blocks += _history(history)
    return _message(f"VCC account {_account(view.account_id)}: Linked", blocks)


def check_result(check: HealthCheck) -> str:
    """A live check's outcome in a line (the Home tab shows it above the accounts)."""
    line = _HEALTH_LINE[check.health].format(
        reason=_shown(check.reason or "unknown reason.", _REASON),
        account=_code(check.account.account_id),
    )
    return f"*{_account(check.account.account_id)}*: {line}"


def recovered_notice(view: AccountView) -> Message:
    text = (
        f":large_green_circle: The Salesforce link of VCC account *{_account(view.account_id)}* "
        f"works again (org `{_code(view.org_id or '?')}`, API user "
        f"{_shown(view.sf_username or '?')})."
    )
    return _message(
        f"Salesforce link of VCC account {_account(view.account_id)} recovered", [_section(text)]
    )


def approval_revoked_dm(account_id: str, revoked: list[AccountView], *, refused: bool) -> Message:
    names = _listed([f"*{_account(v.account_id)}*" for v in revoked])
    linking = (
        f"Linking *{_account(account_id)}* was refused, but Salesforce still counted the approval"
        if refused
        else f"*{_account(account_id)}* is linked, but its approval was a sixth one for that "
        "API user"
    )
    text = (
        f":warning: {linking} and revoked the oldest link of that API user: VCC account "
        f"{names} no longer works. Relink it with another API user (`/vcc link ACCOUNT`)."
    )
    return _message("A sixth approval revoked an existing link", [_section(text)])


def broken_notice(view: AccountView) -> Message:
    text = (
        f":red_circle: The Salesforce link of VCC account *{_account(view.account_id)}* "
        f"(org `{_code(view.org_id or '?')}`, API user {_shown(view.sf_username or '?')}) is "
        f"broken: {_shown(view.health_reason or 'unknown reason', _REASON)}\nVCC cannot look "
        "up records or log calls for this account until an admin relinks it with "
        f"`/vcc link {_code(view.account_id)}`."
    )
    return _message(
        f"Salesforce link of VCC account {_account(view.account_id)} is broken", [_section(text)]
    )


_GROUP_LINES = 10  # accounts per section of a grouped notice
_GROUP_MOST = 40  # accounts named in one grouped notice; the rest are counted


def _grouped(lines: list[str], total: int) -> list[SectionBlock]:
    named = lines[:_GROUP_MOST]
    sections = [
        _section("\n".join(named[i : i + _GROUP_LINES])) for i in range(0, len(named), _GROUP_LINES)
    ]
    if total > len(named):
        sections.append(_section(f"… and {total - len(named)} more."))
    return sections


def broken_group_notice(views: list[AccountView]) -> Message:
    """Many links found broken at once (a mass revocation): one message for the channel."""
    if len(views) == 1:
        return broken_notice(views[0])
    head = (
        f":red_circle: *The Salesforce links of {len(views)} VCC accounts are broken.* VCC "
        "cannot look up records or log calls for them until an admin relinks each with "
        "`/vcc link ACCOUNT`."
    )
    lines = [
        f"• *{_account(v.account_id)}* (API user {_shown(v.sf_username or '?')}): "
        f"{_shown(v.health_reason or 'unknown reason', 200)}"
        for v in views
    ]
    return _message(
        f"The Salesforce links of {len(views)} VCC accounts are broken",
        [_section(head), *_grouped(lines, len(views))],
    )


def recovered_group_notice(views: list[AccountView]) -> Message:
    if len(views) == 1:
        return recovered_notice(views[0])
    head = f":large_green_circle: *The Salesforce links of {len(views)} VCC accounts work again.*"
    lines = [
        f"• *{_account(v.account_id)}* (API user {_shown(v.sf_username or '?')})" for v in views
    ]
    return _message(
        f"The Salesforce links of {len(views)} VCC accounts recovered",
        [_section(head), *_grouped(lines, len(views))],
    )


# ---- /vcc unlink ---------------------------------------------------------------------


def _unlink_confirm(view: AccountView) -> ConfirmObject:
    # Slack's confirm dialog takes plain_text only (mrkdwn is refused), so the account id
    # is shown as is, not escaped.
    linked = view.status == LinkStatus.LINKED
    revoke = " The stored token is revoked at Salesforce." if linked else ""
    return ConfirmObject(
        title=PlainTextObject(text="Unlink from Salesforce?"),
        text=PlainTextObject(
            text=f"VCC account {_clip(view.account_id, _ID)} will stop looking up records and "
            f"logging calls in Salesforce.{revoke}"
        ),
        confirm=PlainTextObject(text="Unlink"),
        deny=PlainTextObject(text="Keep the link"),
        style="danger",
    )


def unlink_warning(view: AccountView) -> Message:
    account = _account(view.account_id)
    revoke = (
        " The stored token is revoked at Salesforce." if view.status == LinkStatus.LINKED else ""
    )
    return _message(
        f"Unlink VCC account {_account(view.account_id)} from Salesforce?",
        [
            _section(
                f":warning: *Unlink VCC account {account} from Salesforce?*\n"
                f"{link_details(view)}\n\nThe Salesforce integration for this account will "
                "stop working: VCC will no longer look up records or create a task at the "
                f"end of calls.{revoke}"
            ),
            ActionsBlock(
                block_id="vcc_unlink",
                elements=[
                    ButtonElement(
                        text="Unlink",
                        action_id=ids.UNLINK_CONFIRM,
                        value=view.account_id,
                        style="danger",
                        confirm=_unlink_confirm(view),
                    ),
                    ButtonElement(
                        text="Cancel", action_id=ids.UNLINK_CANCEL, value=view.account_id
                    ),
                ],
            ),
        ],
    )


def unlinked_result(view: AccountView) -> Message:
    text = (
        f":broken_chain: VCC account *{_account(view.account_id)}* is now *Unlinked*: VCC no "
        f"longer uses Salesforce for it. Link it again with `/vcc link {_code(view.account_id)}`."
    )
    return _said(text)


def unlinked_notice(view: AccountView, by_user: str) -> Message:
    text = (
        f":broken_chain: VCC account *{_account(view.account_id)}* was unlinked from Salesforce "
        f"org `{_code(view.org_id or '?')}` by {_actor(by_user)}. Calls of this account are no "
        "longer logged in Salesforce."
    )
    return _message(f"VCC account {_account(view.account_id)} was unlinked", [_section(text)])


def nothing_changed(account_id: str) -> Message:
    text = f"Nothing changed: VCC account *{_account(account_id)}* stays as it was."
    return _said(text)


def channel_unreachable(channel_id: str, error: str) -> Message:
    text = (
        f":mailbox_closed: I could not post the status notice in {_channel(channel_id)} "
        f"({_shown(error)}). Invite me there with `/invite @VCC`, or run `/vcc channel ACCOUNT` "
        "in a channel I am in to make it the notification channel."
    )
    return _said(text)


HELP = (
    "*vcc-bot* links Vonage Contact Center accounts to Salesforce.\n"
    "• `/vcc link [ACCOUNT]`: link (or relink) a VCC account to a Salesforce API user\n"
    "• `/vcc status [ACCOUNT]`: show the link and check it live with Salesforce\n"
    "• `/vcc unlink [ACCOUNT]`: remove the link (asks for confirmation)\n"
    "• `/vcc history [ACCOUNT]`: the last 10 events of the link (admins)\n"
    "• `/vcc accounts`: every VCC account of this workspace and its link (also in my Home tab)\n"
    "• `/vcc channel [ACCOUNT]`: post the account's notices in this channel (admins)\n"
    "• `/vcc doctor`: check the bot's configuration and say what to fix (admins)\n"
    "• `/vcc help`: this help\n"
    "ACCOUNT is a VCC account id (letters, digits, `.`, `-`, `_`); without it, `default`. "
    "Linking and unlinking are for workspace admins."
)


def help_message() -> Message:
    return _message(
        "vcc-bot: /vcc link | status | unlink | history | accounts | channel | doctor | help",
        [_section(HELP)],
    )


def connected_app_refused_dm(accounts: list[AccountView], problem: str) -> Message:
    """To an admin whose links cannot be checked while Salesforce refuses the bot's app."""
    shown = 20  # a section holds 3,000 characters; an account id up to 64
    names = ", ".join(f"*{escape(v.account_id)}*" for v in accounts[:shown])
    if len(accounts) > shown:
        names += f" and {len(accounts) - shown} more"
    text = (
        f":warning: I cannot check the Salesforce link of VCC account {names} for now. "
        f"{escape(problem)} I check again every interval and say nothing more about it today."
    )
    return _message("The bot's Salesforce connected app was refused", [_section(text)])


# ---- the accounts overview: the Home tab and /vcc accounts ---------------------------

HOME_PAGE_SIZE = 20  # accounts per Home page: 4 blocks each, and 5 around them, within 100
ACCOUNTS_MOST = 45  # accounts listed by /vcc accounts: a section each, within 50 blocks

_STATE = {
    Health.HEALTHY: ":large_green_circle: *Linked*",
    Health.BROKEN: ":red_circle: *Linked, broken*",
    Health.UNKNOWN: ":white_circle: *Linked*",
}


def _state(view: AccountView) -> str:
    if view.status == LinkStatus.LINKED:
        return _STATE[view.health]
    if view.status == LinkStatus.LEGACY:
        return ":large_yellow_circle: *Legacy* (relink recommended)"
    return ":heavy_minus_sign: *Unlinked*"


def account_summary(view: AccountView) -> str:
    """One account in a few lines: status, environment, org, API user, channel."""
    lines = [f"*{_account(view.account_id)}* · {_state(view)}"]
    if view.status != LinkStatus.UNLINKED:
        lines.append(
            f"{_env(view.environment)} · org `{_code(view.org_id or '?')}` · API user "
            f"{_shown(view.sf_username or '?')}"
        )
    if view.status == LinkStatus.LINKED and view.health == Health.BROKEN:
        lines.append(f"Broken: {_shown(view.health_reason or 'unknown reason', _REASON)}")
    channel = _channel(view.notify_channel) if view.notify_channel else "no channel yet"
    lines.append(f"Notices: {channel}")
    return "\n".join(lines)


def _checked(view: AccountView) -> str:
    parts = []
    if view.warnings:
        missing = _listed([_shown(w) for w in view.warnings])
        parts.append(f":warning: Missing recommended permissions: {missing}")
    if view.status != LinkStatus.UNLINKED:
        checked = _when(view.health_checked_at) if view.health_checked_at else "not yet"
        parts.append(f"Last checked with Salesforce: {checked}")
    return " · ".join(parts)


def _home_buttons(view: AccountView) -> ActionsBlock:
    relink = view.status != LinkStatus.UNLINKED
    urgent = view.status != LinkStatus.LINKED or view.health == Health.BROKEN
    elements = [
        ButtonElement(
            text="Relink" if relink else "Link",
            action_id=ids.HOME_LINK,
            value=view.account_id,
            style="primary" if urgent else None,
        )
    ]
    if view.status == LinkStatus.LINKED:
        elements.append(
            ButtonElement(text="Check now", action_id=ids.HOME_CHECK, value=view.account_id)
        )
    if view.status != LinkStatus.UNLINKED:
        elements.append(
            ButtonElement(
                text="Unlink",
                action_id=ids.HOME_UNLINK,
                value=view.account_id,
                style="danger",
                confirm=_unlink_confirm(view),
            )
        )
    return ActionsBlock(block_id=f"vcc_home_{_clip(view.account_id, _ID)}", elements=elements)


def _attention(view: AccountView) -> tuple[int, str]:
    """What needs an admin first: broken links, then Legacy, Linked, Unlinked; by id."""
    if view.status == LinkStatus.LINKED:
        rank = 0 if view.health == Health.BROKEN else 2
    else:
        rank = 1 if view.status == LinkStatus.LEGACY else 3
    return rank, view.account_id


def home_pages(count: int) -> int:
    return max(1, -(-count // HOME_PAGE_SIZE))


def home_view(
    views: list[AccountView], *, admin: bool, page: int = 0, notice: str | None = None
) -> dict[str, Any]:
    """The Home tab: the workspace's accounts, those that need an admin first,
    HOME_PAGE_SIZE a page; admins get buttons."""
    pages = home_pages(len(views))
    page = min(max(page, 0), pages - 1)
    ordered = sorted(views, key=_attention)
    shown = ordered[page * HOME_PAGE_SIZE : (page + 1) * HOME_PAGE_SIZE]
    blocks: list[Block] = [HeaderBlock(text="VCC accounts and their Salesforce links")]
    if notice:
        blocks.append(_section(_fit(notice)))
    who = (
        "You are a workspace admin: you can link, relink, unlink and check accounts here."
        if admin
        else "Only workspace admins can link, relink or unlink accounts; this is a read-only view."
    )
    total = f"{len(views)} account{'s' if len(views) != 1 else ''}"
    where = f" · page {page + 1} of {pages}" if pages > 1 else ""
    blocks.append(_context(f"{total}{where}. {who}"))
    if not views:
        blocks.append(
            _section(
                "No VCC accounts yet. Run `/vcc link ACCOUNT` in the channel that should get "
                "the account's notices."
            )
        )
    for view in shown:
        blocks.append(_section(_fit(account_summary(view))))
        if line := _checked(view):
            blocks.append(_context(_fit(line)))
        if admin:
            blocks.append(_home_buttons(view))
        blocks.append(DividerBlock())
    if pages > 1:
        turns = []
        if page > 0:
            turns.append(
                ButtonElement(text="Previous", action_id=ids.HOME_PREVIOUS, value=str(page - 1))
            )
        if page < pages - 1:
            turns.append(ButtonElement(text="Next", action_id=ids.HOME_NEXT, value=str(page + 1)))
        blocks.append(ActionsBlock(block_id="vcc_home_pages", elements=turns))
    blocks.append(
        _context(
            "New account: `/vcc link ACCOUNT`. Move an account's notices: `/vcc channel "
            "ACCOUNT` in the channel that should get them. Everything: `/vcc help`."
        )
    )
    return View(type="home", blocks=blocks).to_dict()


def accounts_message(views: list[AccountView]) -> Message:
    """/vcc accounts: the Home tab's list, in a message."""
    if not views:
        text = "No VCC accounts yet in this workspace. Link one with `/vcc link ACCOUNT`."
        return _said(text)
    head = f"*{len(views)} VCC account{'s' if len(views) != 1 else ''}* in this workspace"
    blocks: list[Block] = [_section(head)]
    for view in sorted(views, key=_attention)[:ACCOUNTS_MOST]:
        lines = account_summary(view)
        if extra := _checked(view):
            lines += f"\n{extra}"
        blocks.append(_section(_fit(lines)))
    more = len(views) - ACCOUNTS_MOST
    tail = f"… and {more} more: every account is in my Home tab. " if more > 0 else ""
    blocks.append(_context(f"{tail}Details and a live check: `/vcc status ACCOUNT`."))
    return _message(f"{len(views)} VCC accounts", blocks)


# ---- the notification channel --------------------------------------------------------


def channel_set(view: AccountView) -> Message:
    text = (
        f":white_check_mark: The notices of VCC account *{_account(view.account_id)}* will be "
        f"posted in {_channel(view.notify_channel or '')}."
    )
    return _said(text)


def channel_chosen_notice(account_id: str, by_user: str) -> Message:
    text = (
        f":mega: This channel now gets the Salesforce link notices of VCC account "
        f"*{_account(account_id)}* (chosen by {_actor(by_user)})."
    )
    return _said(text)


def channel_refused(channel_id: str, error: str) -> Message:
    text = (
        f":mailbox_closed: I cannot post in {_channel(channel_id)} ({_shown(error)}), so it "
        "cannot be the notification channel. Invite me with `/invite @VCC` and try again. "
        "Nothing changed."
    )
    return _said(text)


# ---- a broken link, to the admin who linked it ---------------------------------------

_BROKEN_DM_MOST = 40  # a section with a Relink button each, within 50 blocks


def broken_dm(views: list[AccountView]) -> Message:
    """To the admin who linked these accounts: each is broken; Relink is one click away."""
    count = len(views)
    head = (
        f":red_circle: The Salesforce link of VCC account *{_account(views[0].account_id)}*, "
        "which you linked, is broken."
        if count == 1
        else f":red_circle: The Salesforce links of {count} VCC accounts you linked are broken."
    )
    blocks: list[Block] = [
        _section(
            f"{head} VCC cannot look up records or log calls for "
            f"{'it' if count == 1 else 'them'} until {'it is' if count == 1 else 'each is'} "
            "relinked."
        )
    ]
    for view in views[:_BROKEN_DM_MOST]:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=_fit(
                        f"*{_account(view.account_id)}* · API user "
                        f"{_shown(view.sf_username or '?')}\n"
                        f"{_shown(view.health_reason or 'unknown reason', _REASON)}"
                    )
                ),
                accessory=ButtonElement(
                    text="Relink", action_id=ids.RELINK, value=view.account_id, style="primary"
                ),
            )
        )
    if count > _BROKEN_DM_MOST:
        blocks.append(_context(f"… and {count - _BROKEN_DM_MOST} more: see my Home tab."))
    return _message(
        f"Salesforce link of VCC account {_account(views[0].account_id)} is broken"
        if count == 1
        else f"The Salesforce links of {count} VCC accounts you linked are broken",
        blocks,
    )


def doctor_report(report: DoctorReport) -> Message:
    """/vcc doctor: the problems first, each with what to do, then what passed."""
    problems = report.problems
    passed = [f for f in report.findings if f.passed]
    count, total = len(problems), len(report.findings)

    def title(finding: Finding) -> str:
        where = f" {_channel(finding.channel)}" if finding.channel else ""
        return f"*{_shown(finding.check)}*{where}"

    if problems:
        noun = "problem" if count == 1 else "problems"
        head = f":warning: *{count} {noun} to fix* ({len(passed)} of {total} checks passed)"
        text = f"vcc-bot doctor: {count} {noun} to fix"
    else:
        head = f":white_check_mark: *Everything passed* ({total} checks)"
        text = "vcc-bot doctor: everything passed"
    found: list[Block] = [HeaderBlock(text="vcc-bot doctor"), _section(head)]
    found += _packed(
        [
            f":x: {title(f)}: {_shown(f.detail, _DETAIL)}"
            + (f"\n>*Fix:* {_shown(f.fix, _DETAIL)}" if f.fix else "")
            for f in problems
        ],
        _section,
    )
    ok = [f":white_check_mark: {title(f)}: {_shown(f.detail, _DETAIL)}" for f in passed]
    found += _packed(ok, _context)
    if len(found) > MESSAGE_BLOCKS:  # hundreds of channels: the rest is in the terminal
        found = found[: MESSAGE_BLOCKS - 1]
        found.append(_context("… and more: `vcc-bot doctor` prints every check."))
    return _message(text, found)
