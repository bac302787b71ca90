"""Plain-language texts shared by Slack messages and the browser pages."""

from __future__ import annotations

from bot.domain import (
    ApiUserLimit,
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
from storage.repository import AttemptProblem

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
}


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
