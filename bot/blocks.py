"""Pure functions: data in, Slack messages (fallback text + Block Kit) out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot import ids
from bot.domain import AccountView, HealthCheck, LinkError, LinkResult, LoginContext
from bot.messages import API_USER_NEEDS, LOGIN_ADVICE, describe
from storage.models import Environment, Health, LinkStatus


@dataclass(frozen=True)
class Message:
    text: str  # notification and screen-reader fallback
    blocks: list[dict[str, Any]]

    def kwargs(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}


def _message(text: str, blocks: list[Block]) -> Message:
    # to_dict() validates lengths, so an oversize field fails here, not at Slack.
    return Message(text=text, blocks=[b.to_dict() for b in blocks])


def _esc(value: str) -> str:
    """Escape the three characters mrkdwn treats as control characters."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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
        f"*Org:* `{_esc(view.org_id or '?')}` ({_env(view.environment)})",
        f"*API user:* {_esc(view.sf_username or '?')}",
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
    account = _esc(view.account_id)
    if view.status == LinkStatus.LINKED:
        intro = (
            f"VCC account *{account}* is already *Linked*.\n{link_details(view)}\n"
            "Choose an environment to *relink* it; the current link keeps working until "
            "the new one is made."
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
        f"{verb} VCC account {view.account_id} to Salesforce",
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
                ],
            ),
            _context(
                "I'll send you a Salesforce login link in a direct message. " + API_USER_NEEDS
            ),
        ],
    )


def check_your_dms(account_id: str, environment: Environment) -> Message:
    text = (
        f":envelope: Check your DMs: I sent you a {environment.label} login link for VCC "
        f"account *{_esc(account_id)}*."
    )
    return _message(text, [_section(text)])


def login_link(ctx: LoginContext, url: str, expires_in: timedelta) -> Message:
    minutes = int(expires_in.total_seconds() // 60)
    return _message(
        f"Log in to Salesforce to link VCC account {ctx.account_id}",
        [
            HeaderBlock(text=PlainTextObject(text="Link VCC to Salesforce")),
            _section(
                f"Log in to Salesforce *{ctx.environment.label}* to link VCC account "
                f"*{_esc(ctx.account_id)}*, then click *Allow*.\n\n"
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
            f":white_check_mark: *{verb}.* VCC account *{_esc(view.account_id)}* now uses "
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
    return _message(f"{verb} VCC account {view.account_id} to Salesforce", blocks)


def linked_notice(result: LinkResult) -> Message:
    view = result.account
    verb = "relinked" if result.relinked else "linked"
    text = (
        f":link: VCC account *{_esc(view.account_id)}* was {verb} to Salesforce org "
        f"`{_esc(view.org_id or '?')}` ({_env(view.environment)}) as API user "
        f"{_esc(view.sf_username or '?')} by <@{view.linked_by}>."
    )
    return _message(f"VCC account {view.account_id} was {verb} to Salesforce", [_section(text)])


def failure(error: LinkError, account_id: str | None = None) -> Message:
    title, detail = describe(error)
    about = f" (VCC account *{_esc(account_id)}*)" if account_id else ""
    return _message(f"{title}: {detail}", [_section(f":x: *{title}*{about}\n{_esc(detail)}")])


def login_dm_failed(error: str) -> Message:
    text = (
        f":warning: I could not send you the login link in a DM (Slack said {_esc(error)}). "
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


def status(
    view: AccountView, check: HealthCheck | None = None, *, checking: bool = False
) -> Message:
    account = _esc(view.account_id)
    blocks: list[Block] = []
    if view.status == LinkStatus.UNLINKED:
        blocks.append(
            _section(f"VCC account *{account}* is *Unlinked*. Link it with `/vcc link {account}`.")
        )
        return _message(f"VCC account {view.account_id}: Unlinked", blocks)
    if view.status == LinkStatus.LEGACY:
        blocks.append(
            _section(
                f"VCC account *{account}* is *Legacy*: linked by an older method. "
                f"Relink recommended: `/vcc link {account}`.\n"
                f"*API user:* {_esc(view.sf_username or '?')} ({_env(view.environment)})"
            )
        )
        return _message(f"VCC account {view.account_id}: Legacy (relink recommended)", blocks)
    blocks += [_section(f"VCC account *{account}* is *Linked*.\n{link_details(view)}")]
    blocks += _warnings(view)
    if checking:
        blocks.append(_context(":hourglass_flowing_sand: Checking the link with Salesforce…"))
    elif check is not None:
        line = _HEALTH_LINE[check.health].format(
            reason=_esc(check.reason or "unknown reason."), account=account
        )
        blocks.append(_section(line))
    elif view.health == Health.BROKEN:
        blocks.append(
            _section(
                _HEALTH_LINE[Health.BROKEN].format(
                    reason=_esc(view.health_reason or "unknown"), account=account
                )
            )
        )
    if view.health_checked_at and not checking:
        blocks.append(_context(f"Last checked {_when(view.health_checked_at)}"))
    return _message(f"VCC account {view.account_id}: Linked", blocks)


def recovered_notice(view: AccountView) -> Message:
    text = (
        f":large_green_circle: The Salesforce link of VCC account *{_esc(view.account_id)}* "
        f"works again (org `{_esc(view.org_id or '?')}`, API user "
        f"{_esc(view.sf_username or '?')})."
    )
    return _message(f"Salesforce link of VCC account {view.account_id} recovered", [_section(text)])


def sixth_approval_dm(refused_account: str, revoked: list[AccountView]) -> Message:
    names = ", ".join(f"*{_esc(v.account_id)}*" for v in revoked)
    text = (
        f":warning: Linking *{_esc(refused_account)}* was refused, but Salesforce still "
        f"counted the approval and revoked the oldest link of that API user: VCC account "
        f"{names} no longer works. Relink it with another API user (`/vcc link ACCOUNT`)."
    )
    return _message("A sixth approval revoked an existing link", [_section(text)])


def broken_notice(view: AccountView) -> Message:
    text = (
        f":red_circle: The Salesforce link of VCC account *{_esc(view.account_id)}* "
        f"(org `{_esc(view.org_id or '?')}`, API user {_esc(view.sf_username or '?')}) is "
        f"broken: {_esc(view.health_reason or 'unknown reason')}\nVCC cannot look up records "
        f"or log calls for this account until an admin relinks it with "
        f"`/vcc link {_esc(view.account_id)}`."
    )
    return _message(f"Salesforce link of VCC account {view.account_id} is broken", [_section(text)])


# ---- /vcc unlink ---------------------------------------------------------------------


def unlink_warning(view: AccountView) -> Message:
    account = _esc(view.account_id)
    return _message(
        f"Unlink VCC account {view.account_id} from Salesforce?",
        [
            _section(
                f":warning: *Unlink VCC account {account} from Salesforce?*\n"
                f"{link_details(view)}\n\nThe Salesforce integration for this account will "
                "stop working: VCC will no longer look up records or create a task at the "
                "end of calls. The stored token is revoked at Salesforce."
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
        f":broken_chain: VCC account *{_esc(view.account_id)}* is now *Unlinked*. The token "
        f"was revoked at Salesforce. Link it again with `/vcc link {_esc(view.account_id)}`."
    )
    return _message(text, [_section(text)])


def unlinked_notice(view: AccountView, by_user: str) -> Message:
    text = (
        f":broken_chain: VCC account *{_esc(view.account_id)}* was unlinked from Salesforce "
        f"org `{_esc(view.org_id or '?')}` by <@{by_user}>. Calls of this account are no "
        "longer logged in Salesforce."
    )
    return _message(f"VCC account {view.account_id} was unlinked", [_section(text)])


def nothing_changed(account_id: str) -> Message:
    text = f"Nothing changed: VCC account *{_esc(account_id)}* stays as it was."
    return _message(text, [_section(text)])


def channel_unreachable(channel_id: str, error: str) -> Message:
    text = (
        f":mailbox_closed: I could not post the status notice in <#{channel_id}> "
        f"({_esc(error)}). Invite me there with `/invite @VCC`, or run `/vcc link` from a "
        "channel I am in to make it the notification channel."
    )
    return _message(text, [_section(text)])


HELP = (
    "*vcc-bot* links Vonage Contact Center accounts to Salesforce.\n"
    "• `/vcc link [ACCOUNT]`: link (or relink) a VCC account to a Salesforce API user\n"
    "• `/vcc status [ACCOUNT]`: show the link and check it live with Salesforce\n"
    "• `/vcc unlink [ACCOUNT]`: remove the link (asks for confirmation)\n"
    "• `/vcc help`: this help\n"
    "ACCOUNT is a VCC account id (letters, digits, `.`, `-`, `_`); without it, `default`. "
    "Linking and unlinking are for workspace admins."
)


def help_message() -> Message:
    return _message("vcc-bot: /vcc link | status | unlink | help", [_section(HELP)])
