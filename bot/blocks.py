"""Pure functions: data in, Slack messages (fallback text + Block Kit) out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
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
    Environment,
    Health,
    HealthCheck,
    LinkError,
    LinkResult,
    LinkStatus,
    LoginLink,
)
from bot.messages import API_USER_NEEDS, LOGIN_ADVICE, describe

SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")


@dataclass(frozen=True)
class Message:
    text: str  # notification and screen-reader fallback
    blocks: list[dict[str, Any]]

    def kwargs(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}


def _message(text: str, blocks: list[Block]) -> Message:
    # to_dict() validates lengths, so an oversize field fails here, not at Slack.
    return Message(text=text, blocks=[b.to_dict() for b in blocks])


# Zero-width spaces after mrkdwn's formatting characters: a value cannot open or close
# bold, italics, strikethrough or code, and still looks the same.
_FORMATTING = str.maketrans({c: c + "\u200b" for c in "*_~`"})


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


def _section(markdown: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=markdown))


def _context(markdown: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=markdown)])


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
        f"*Org:* `{code(view.org_id or '?')}` ({_env(view.environment)})",
        f"*API user:* {escape(view.sf_username or '?')}",
    ]
    if view.linked_by:
        lines.append(f"*Linked by:* <@{view.linked_by}> on {_when(view.linked_at)}")
    return "\n".join(lines)


def _warnings(view: AccountView) -> list[Block]:
    if not view.warnings:
        return []
    return [
        _context(
            ":warning: Recommended for this API user but missing: "
            + ", ".join(view.warnings)
            + ". VCC may not find every record, or Data Connector inserts may fail."
        )
    ]


# ---- /vcc link -----------------------------------------------------------------------


def link_prompt(view: AccountView) -> Message:
    account = escape(view.account_id)
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
        f"{verb} VCC account {escape(view.account_id)} to Salesforce",
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
                f"Link VCC account *{escape(account_id)}* through your org's My Domain. "
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
        f"account *{escape(account_id)}*."
    )
    return _message(text, [_section(text)])


def login_link(link: LoginLink) -> Message:
    ctx, url = link.context, link.url
    minutes = int(link.expires_in.total_seconds() // 60)
    return _message(
        f"Log in to Salesforce to link VCC account {escape(ctx.account_id)}",
        [
            HeaderBlock(text=PlainTextObject(text="Link VCC to Salesforce")),
            _section(
                f"Log in to Salesforce *{ctx.environment.label}* to link VCC account "
                f"*{escape(ctx.account_id)}*, then click *Allow*.\n\n"
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
                f"browser.\n:key: {API_USER_NEEDS}"
            ),
        ],
    )


def linked_dm(result: LinkResult) -> Message:
    view = result.account
    verb = "Relinked" if result.relinked else "Linked"
    blocks: list[Block] = [
        _section(
            f":white_check_mark: *{verb}.* VCC account *{escape(view.account_id)}* now uses "
            f"Salesforce.\n{link_details(view)}"
        ),
        *_warnings(view),
    ]
    if result.unchecked:
        blocks.append(
            _context(
                "This org would not let me check: "
                + ", ".join(result.unchecked)
                + ". Please check them on the API user's profile or permission sets."
            )
        )
    return _message(f"{verb} VCC account {escape(view.account_id)} to Salesforce", blocks)


def linked_notice(result: LinkResult) -> Message:
    view = result.account
    verb = "relinked" if result.relinked else "linked"
    text = (
        f":link: VCC account *{escape(view.account_id)}* was {verb} to Salesforce org "
        f"`{code(view.org_id or '?')}` ({_env(view.environment)}) as API user "
        f"{escape(view.sf_username or '?')} by <@{view.linked_by}>."
    )
    return _message(
        f"VCC account {escape(view.account_id)} was {verb} to Salesforce", [_section(text)]
    )


def failure(error: LinkError, account_id: str | None = None) -> Message:
    title, detail = describe(error)
    about = f" (VCC account *{escape(account_id)}*)" if account_id else ""
    return _message(
        f"{escape(title)}: {escape(detail)}",
        [_section(f":x: *{escape(title)}*{about}\n{escape(detail)}")],
    )


def login_dm_failed(error: str) -> Message:
    text = (
        f":warning: I could not send you the login link in a DM (Slack said {escape(error)}). "
        "Nothing was linked; run `/vcc link` again."
    )
    return _message(text, [_section(text)])


def not_allowed(action: str) -> Message:
    text = (
        f":no_entry: Only workspace admins and owners, or users listed in VCC_ADMIN_USERS, "
        f"can {action}. Nothing changed."
    )
    return _message(text, [_section(text)])


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
}


def _actor(actor: str) -> str:
    return f"<@{actor}>" if SLACK_USER.fullmatch(actor) else escape(actor)


def history_line(entry: AuditEntry) -> str:
    label = _EVENT_LABELS.get(entry.event, entry.event)
    who = _actor(entry.actor)
    user = f" · {escape(entry.sf_username)}" if entry.sf_username else ""
    detail = f": {escape(entry.detail)}" if entry.detail else ""
    return f"{_when(entry.at)} · *{label}* by {who}{user}{detail}"


def _history(entries: list[AuditEntry], limit: int = 3) -> list[Block]:
    if not entries:
        return []
    lines = "\n".join(history_line(e) for e in entries[:limit])
    return [_context(f"*Recent history*\n{lines}")]


def history(account_id: str, entries: list[AuditEntry]) -> Message:
    if not entries:
        text = f"No history yet for VCC account *{escape(account_id)}*."
        return _message(text, [_section(text)])
    lines = "\n".join(f"• {history_line(e)}" for e in entries)
    return _message(
        f"History of VCC account {escape(account_id)}",
        [_section(f"*History of VCC account {escape(account_id)}* (newest first)\n{lines}")],
    )


def status(
    view: AccountView,
    check: HealthCheck | None = None,
    *,
    checking: bool = False,
    history: list[AuditEntry] | None = None,
) -> Message:
    account = escape(view.account_id)
    history = history or []
    blocks: list[Block] = []
    if view.status == LinkStatus.UNLINKED:
        blocks.append(
            _section(
                f"VCC account *{account}* is *Unlinked*. Link it with "
                f"`/vcc link {code(view.account_id)}`."
            )
        )
        blocks += _history(history)
        return _message(f"VCC account {escape(view.account_id)}: Unlinked", blocks)
    if view.status == LinkStatus.LEGACY:
        blocks.append(
            _section(
                f"VCC account *{account}* is *Legacy*: linked by an older method. "
                "Relink recommended.\n"
                f"*API user:* {escape(view.sf_username or '?')} ({_env(view.environment)})"
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
            f"VCC account {escape(view.account_id)}: Legacy (relink recommended)", blocks
        )
    blocks += [_section(f"VCC account *{account}* is *Linked*.\n{link_details(view)}")]
    blocks += _warnings(view)
    if checking:
        blocks.append(_context(":hourglass_flowing_sand: Checking the link with Salesforce…"))
    elif check is not None:
        line = _HEALTH_LINE[check.health].format(
            reason=escape(check.reason or "unknown reason."), account=code(view.account_id)
        )
        blocks.append(_section(line))
    elif view.health == Health.BROKEN:
        line = _HEALTH_LINE[Health.BROKEN].format(
            reason=escape(view.health_reason or "unknown"), account=code(view.account_id)
        )
        blocks.append(_section(line))
    checked_at = check.checked_at if check is not None else None
    checked_at = checked_at or view.health_checked_at
    if checked_at and not checking:
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
    blocks += _history(history)
    return _message(f"VCC account {escape(view.account_id)}: Linked", blocks)


def recovered_notice(view: AccountView) -> Message:
    text = (
        f":large_green_circle: The Salesforce link of VCC account *{escape(view.account_id)}* "
        f"works again (org `{code(view.org_id or '?')}`, API user "
        f"{escape(view.sf_username or '?')})."
    )
    return _message(
        f"Salesforce link of VCC account {escape(view.account_id)} recovered", [_section(text)]
    )


def approval_revoked_dm(account_id: str, revoked: list[AccountView], *, refused: bool) -> Message:
    names = ", ".join(f"*{escape(v.account_id)}*" for v in revoked)
    linking = (
        f"Linking *{escape(account_id)}* was refused, but Salesforce still counted the approval"
        if refused
        else f"*{escape(account_id)}* is linked, but its approval was a sixth one for that API user"
    )
    text = (
        f":warning: {linking} and revoked the oldest link of that API user: VCC account "
        f"{names} no longer works. Relink it with another API user (`/vcc link ACCOUNT`)."
    )
    return _message("A sixth approval revoked an existing link", [_section(text)])


def broken_notice(view: AccountView) -> Message:
    text = (
        f":red_circle: The Salesforce link of VCC account *{escape(view.account_id)}* "
        f"(org `{code(view.org_id or '?')}`, API user {escape(view.sf_username or '?')}) is "
        f"broken: {escape(view.health_reason or 'unknown reason')}\nVCC cannot look up records "
        f"or log calls for this account until an admin relinks it with "
        f"`/vcc link {code(view.account_id)}`."
    )
    return _message(
        f"Salesforce link of VCC account {escape(view.account_id)} is broken", [_section(text)]
    )


# ---- /vcc unlink ---------------------------------------------------------------------


def unlink_warning(view: AccountView) -> Message:
    account = escape(view.account_id)
    revoke = (
        " The stored token is revoked at Salesforce." if view.status == LinkStatus.LINKED else ""
    )
    return _message(
        f"Unlink VCC account {escape(view.account_id)} from Salesforce?",
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
                        confirm=ConfirmObject(
                            title="Unlink from Salesforce?",
                            text=(
                                f"VCC account {view.account_id} will stop looking up "
                                "records and logging calls in Salesforce."
                            ),
                            confirm="Unlink",
                            deny="Keep the link",
                            style="danger",
                        ),
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
        f":broken_chain: VCC account *{escape(view.account_id)}* is now *Unlinked*: VCC no longer "
        f"uses Salesforce for it. Link it again with `/vcc link {code(view.account_id)}`."
    )
    return _message(text, [_section(text)])


def unlinked_notice(view: AccountView, by_user: str) -> Message:
    text = (
        f":broken_chain: VCC account *{escape(view.account_id)}* was unlinked from Salesforce "
        f"org `{code(view.org_id or '?')}` by <@{by_user}>. Calls of this account are no "
        "longer logged in Salesforce."
    )
    return _message(f"VCC account {escape(view.account_id)} was unlinked", [_section(text)])


def nothing_changed(account_id: str) -> Message:
    text = f"Nothing changed: VCC account *{escape(account_id)}* stays as it was."
    return _message(text, [_section(text)])


def channel_unreachable(channel_id: str, error: str) -> Message:
    text = (
        f":mailbox_closed: I could not post the status notice in <#{channel_id}> "
        f"({escape(error)}). Invite me there with `/invite @VCC`, or run `/vcc link` from a "
        "channel I am in to make it the notification channel."
    )
    return _message(text, [_section(text)])


HELP = (
    "*vcc-bot* links Vonage Contact Center accounts to Salesforce.\n"
    "• `/vcc link [ACCOUNT]`: link (or relink) a VCC account to a Salesforce API user\n"
    "• `/vcc status [ACCOUNT]`: show the link and check it live with Salesforce\n"
    "• `/vcc unlink [ACCOUNT]`: remove the link (asks for confirmation)\n"
    "• `/vcc history [ACCOUNT]`: the last 10 events of the link (admins)\n"
    "• `/vcc help`: this help\n"
    "ACCOUNT is a VCC account id (letters, digits, `.`, `-`, `_`); without it, `default`. "
    "Linking and unlinking are for workspace admins."
)


def help_message() -> Message:
    return _message("vcc-bot: /vcc link | status | unlink | history | help", [_section(HELP)])
