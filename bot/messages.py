"""Plain-language texts: every sentence shown to people, in Slack, on pages or in history."""

from __future__ import annotations

from bot.domain import (
    ApiUserLimit,
    AttemptProblem,
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

API_USER_NEEDS = (
    "The API user needs a Salesforce licence, no login-hour or IP-range restrictions, "
    "and the permissions API Enabled and Edit Tasks. Depending on your org it also needs "
    "View All Users, View All Data (private sharing model) and Modify All Data (Data "
    "Connector inserts). An API Only user is recommended: it is never asked for MFA."
)

LOGIN_ADVICE = (
    "Log in directly as the Salesforce API user, with its own username and password. "
    'Do not use "Log in as another user" from an admin session: Salesforce would link '
    "the wrong user."
)

_LINK_PROBLEMS = {
    AttemptProblem.UNKNOWN: "This login link is not valid. Run /vcc link again for a new one.",
    AttemptProblem.EXPIRED: (
        "This login link has expired (links last 10 minutes). Run /vcc link again."
    ),
    AttemptProblem.USED: "This login link was already used. Run /vcc link again for a new one.",
    AttemptProblem.OTHER_BROWSER: (
        "This login was started in another browser. Open the link from your Slack DM in "
        "one browser and finish there, or run /vcc link again."
    ),
    AttemptProblem.WITHDRAWN: (
        "This login link was withdrawn because the VCC account was unlinked after it was "
        "sent. Nothing was linked; run /vcc link again if you still want the link."
    ),
}

UNDECRYPTABLE = "The stored token cannot be decrypted with any key in VCC_ENCRYPTION_KEY; relink."
NOT_REACHED = "Salesforce could not be reached."
NOT_IN_TIME = "Salesforce did not answer in time; the check goes on and its result is recorded."
NOT_VERIFIED = "Salesforce's answer could not be verified."
NOT_AS_EXPECTED = "Salesforce did not answer as expected."
DATABASE_SLOW = "The bot's database did not answer in time."
BAD_CLIENT = (
    "Salesforce refused the bot's connected-app credentials "
    "(SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET)."
)
INACTIVE_USER = "The Salesforce API user is inactive."
OTHER_USER = "The token belongs to another Salesforce user."


def lost_permissions(missing: list[str]) -> str:
    return "The API user lost required permissions: " + ", ".join(missing) + "."


def broken_reason(refused: SalesforceLoginFailed) -> str:
    """Explain a refused refresh or identity call the way an admin can act on it."""
    description = refused.description.lower()
    if refused.error == "invalid_grant" and "ip restricted" in description:
        return "Salesforce refused the API user's login: IP restricted or invalid login hours."
    if refused.error == "invalid_grant":
        return (
            "Salesforce refused the stored token (invalid_grant): it was revoked or has "
            "expired, for example by an admin, the org's refresh-token policy, or a sixth "
            "approval by the same API user."
        )
    if refused.error == "inactive_user":
        return "The Salesforce API user is inactive (deactivated or frozen)."
    if refused.error == "inactive_org":
        return "The Salesforce org is locked or inactive."
    if refused.error in ("identity_refused", "INVALID_SESSION_ID"):
        # A token refreshed a moment ago and refused now: revoked meanwhile, or no access.
        return (
            "Salesforce refused a fresh access token for this link: it was revoked while "
            "being checked, or the API user lost access."
        )
    detail = f": {refused.description}" if refused.description else ""
    return f"Salesforce refused the link ({refused.error}{detail})."


def refusal_reason(error: LinkError) -> str:
    """A short, plain reason for the audit trail."""
    match error:
        case MissingPermissions(missing=missing):
            return "missing required permissions: " + ", ".join(missing)
        case ApiUserLimit(username=username, count=count):
            return f"API user {username} already linked to {count} VCC accounts"
        case SalesforceLoginFailed(error=code, description=description):
            return f"Salesforce refused: {code}" + (f" ({description})" if description else "")
        case SalesforceDown():
            return "Salesforce unavailable"
        case DatabaseDown():
            return "database unavailable; the new token was revoked"
        case ForgedResponse():
            return "token response signature did not match"
        case LoginLinkProblem(problem=problem):
            return f"login link {problem.value}"
    return type(error).__name__


def sixth_approval_elsewhere(username: str) -> str:
    """The same, told to another workspace: which account cost it is not theirs to know."""
    return (
        f"Salesforce revoked this link because the API user {username} approved a sixth "
        "connection; Salesforce keeps at most five per user. Relink this account with "
        "another API user."
    )


def sixth_approval_reason(username: str, account_id: str) -> str:
    """Why a link died when the same API user approved a connection beyond five."""
    return (
        f"Salesforce revoked this link because the API user {username} approved a sixth "
        f"connection (while linking VCC account {account_id}); Salesforce keeps at most five "
        "per user. Relink this account with another API user."
    )


def describe(error: LinkError) -> tuple[str, str]:
    """A short title and an explanation an admin can act on."""
    match error:
        case LoginLinkProblem(problem=problem):
            return "Link not valid", _LINK_PROBLEMS[problem]
        case LoginCancelled():
            return "Linking cancelled", (
                "You did not allow access in Salesforce, so nothing was linked. "
                "Run /vcc link to try again."
            )
        case SalesforceLoginFailed(error="unexpected_answer"):
            return "Salesforce did not answer as expected", (
                "Salesforce answered, but not in the form it documents (for example an HTML "
                "page instead of data), so nothing was linked and any new approval was "
                "revoked. Try again in a few minutes; if it persists, check the login host."
            )
        case SalesforceLoginFailed(error=code, description=description):
            detail = f" ({description})" if description else ""
            return "Salesforce refused the login", (
                f"Salesforce answered {code}{detail}. Nothing was linked. Check the API "
                "user and the connected app, then run /vcc link again."
            )
        case SalesforceDown():
            return "Salesforce is not answering", (
                "Salesforce could not be reached or had an error. Nothing changed; "
                "try again in a few minutes."
            )
        case DatabaseDown():
            return "The bot's database is not answering", (
                "Nothing changed: no link was made or removed, and an approval Salesforce "
                "gave meanwhile was revoked again. Try again in a minute; if it keeps "
                "happening, tell the bot's operator."
            )
        case ForgedResponse():
            return "Answer could not be verified", (
                "Salesforce's answer did not carry a valid signature for this connected "
                "app, so it was refused and nothing was linked. Check SALESFORCE_CLIENT_SECRET."
            )
        case MissingPermissions(username=username, missing=missing):
            return "Permissions missing", (
                f"The Salesforce user {username} lacks {', '.join(missing)}. VCC needs them "
                "to look up records and create a task at the end of every call. Nothing was "
                "linked; grant them (profile or permission set) and run /vcc link again."
            )
        case ApiUserLimit(username=username, linked_here=here, count=count):
            listed = f" ({', '.join(here)} in this workspace)" if here else ""
            return "API user already in use five times", (
                f"The Salesforce user {username} is already linked to {count} VCC "
                f"accounts{listed}; one API user may serve at most five, because Salesforce "
                "keeps at most five approvals per user and app. Nothing was linked. Create "
                "another API user for this account and link with that one. Your approval "
                "still counted at Salesforce, which may have revoked that user's oldest link "
                "in return: I am checking its links now and will tell you."
            )
        case NotLinked(account_id=account_id):
            return "Not linked", f"VCC account {account_id} is not linked; nothing to unlink."
        case LinkChanged():
            return "The link changed meanwhile", (
                "Someone relinked this account while you acted; nothing of the new link "
                "was touched. Run /vcc status to see where it stands."
            )
        case InvalidMyDomain(value=value, unprintable=True):
            return "Not a My Domain host", (
                f"{value!r} contains a space, a line break or another control character. "
                "Type the My Domain host on one line, for example acme.my.salesforce.com."
            )
        case InvalidMyDomain(value=value):
            return "Not a My Domain host", (
                f"{value!r} is not a Salesforce My Domain login host. Use your org's "
                "NAME.my.salesforce.com, or NAME--SANDBOX.sandbox.my.salesforce.com for a "
                "sandbox (Setup → My Domain shows it)."
            )
        case InvalidAccountId(value=value):
            return "Not a VCC account id", (
                f"{value!r} is not a VCC account id: use 1 to 64 letters, digits, '.', '-' or '_'."
            )
    return "Something went wrong", "Nothing changed. Try again."
