"""Plain-language texts: every sentence shown to people, in Slack, on pages or in history."""

from __future__ import annotations

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

# For the login DM. Some refusals Salesforce shows on its own page and never sends back
# to the bot (an unknown consumer key, an app the org has not installed), so the admin
# must hear beforehand what to do about them. No underscores or <, >, &: shown as is.
LOGIN_ERROR_HELP = (
    "If Salesforce shows an error page instead of the Allow button, nothing reaches me and "
    'nothing is linked. "app must be installed into org", or an External Client App not '
    "found: a Salesforce admin installs the connected app in this org (Setup → Connected "
    "Apps OAuth Usage → Install) or gives the API user the permission Approve Uninstalled "
    'Connected Apps. "client identifier invalid": tell the bot\'s operator, the consumer '
    "key is wrong. Then run /vcc link again."
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

_LINK_PROBLEM_TITLES = {
    AttemptProblem.UNKNOWN: "Login link not valid",
    AttemptProblem.EXPIRED: "Login link expired",
    AttemptProblem.USED: "Login link already used",
    AttemptProblem.OTHER_BROWSER: "Login started in another browser",
    AttemptProblem.WITHDRAWN: "Login link withdrawn",
}

UNDECRYPTABLE = "The stored token cannot be decrypted with any key in VCC_ENCRYPTION_KEY; relink."
NOT_REACHED = "Salesforce could not be reached."
NOT_IN_TIME = "Salesforce did not answer in time; the check goes on and its result is recorded."
NOT_VERIFIED = "Salesforce's answer could not be verified."
NOT_AS_EXPECTED = "Salesforce did not answer as expected."
DATABASE_SLOW = "The bot's database did not answer in time."
INACTIVE_USER = (
    "The Salesforce API user is inactive: deactivated or frozen. A Salesforce admin must "
    "reactivate it (Setup → Users → Edit → Active) or unfreeze it (Setup → Users → the "
    "user → Unfreeze); then run /vcc status, and relink if it still fails."
)
OTHER_USER = "The token belongs to another Salesforce user."


def lost_permissions(missing: list[str]) -> str:
    return "The API user lost required permissions: " + ", ".join(missing) + "."


def broken_reason(refused: SalesforceLoginFailed) -> str:
    """Explain a refused refresh or identity call the way an admin can act on it.

    Salesforce says why in the description as much as in the code: a deactivated or
    frozen user's refresh is invalid_grant "inactive user" (restforce#303).
    """
    description = refused.description.lower()
    if refused.error == "inactive_user" or (
        refused.error == "invalid_grant" and "inactive user" in description
    ):
        return INACTIVE_USER
    if refused.error == "invalid_grant" and (
        "ip restricted" in description or "login hours" in description
    ):
        return (
            "Salesforce refused the API user's login: IP restricted or invalid login hours. "
            "A Salesforce admin must allow the bot's IP address in the API user's profile "
            "(Login IP Ranges) or relax IP restrictions for the connected app, and lift the "
            "profile's Login Hours; then run /vcc status."
        )
    if refused.error == "invalid_grant" and ("expired" in description or not description):
        return (
            "Salesforce refused the stored token (invalid_grant): it was revoked or has "
            "expired. Revoked by an admin or by a sixth approval of the same API user, or "
            "expired under the connected app's refresh token policy. Relink the account; so "
            "that it does not expire again, a Salesforce admin sets the connected app's "
            'Refresh Token Policy to "Refresh token is valid until revoked".'
        )
    if refused.error == "invalid_grant":
        return (
            f"Salesforce refused the stored token (invalid_grant: {refused.description}). "
            "Relink the account; if it happens again, a Salesforce admin should check the "
            "API user and the connected app's policies."
        )
    if refused.error == "inactive_org":
        return (
            "The Salesforce org is locked, closed or suspended (inactive_org). Its admin must "
            "have Salesforce reactivate it; the link works again once the org does."
        )
    if refused.error in ("API_DISABLED_FOR_ORG", "API_CURRENTLY_DISABLED"):
        return (
            f"Salesforce refused API access ({refused.error}): the org's edition or the API "
            "user's profile no longer allows the API. A Salesforce admin must grant API "
            "Enabled; then run /vcc status."
        )
    if refused.error in ("identity_refused", "INVALID_SESSION_ID"):
        # A token refreshed a moment ago and refused now: revoked meanwhile, or no access.
        return (
            "Salesforce refused a fresh access token for this link: it was revoked while "
            "being checked, or the API user lost access."
        )
    detail = f": {refused.description}" if refused.description else ""
    return f"Salesforce refused the link ({refused.error}{detail})."


def connected_app_fix(refused: SalesforceLoginFailed) -> str:
    """The setting that fixes an error of the bot's connected app, for its operator."""
    if refused.error == "redirect_uri_mismatch":
        return "the connected app's Callback URL must be exactly PUBLIC_URL/salesforce/callback"
    if "install" in refused.description.lower():
        return (
            "install the connected app in the org (Setup → Connected Apps OAuth Usage → "
            "Install), or give the API user Approve Uninstalled Connected Apps"
        )
    if refused.error == "invalid_client_id":
        return (
            "SALESFORCE_CLIENT_ID is not a consumer key Salesforce knows at this login host: "
            "copy the connected app's Consumer Key again (or the app was deleted, or is not "
            "available in this org)"
        )
    return (
        "SALESFORCE_CLIENT_SECRET does not match the connected app's Consumer Secret: copy it again"
    )


def connected_app_problem(refused: SalesforceLoginFailed) -> str:
    """Why links go unchecked while Salesforce refuses the bot's connected app."""
    return (
        f"Salesforce refused the bot's connected app ({refused.error}), so the link could "
        "not be checked; it is not broken and needs no relink. The bot's operator must fix "
        f"it: {connected_app_fix(refused)}."
    )


def could_not_check(refused: SalesforceLoginFailed) -> str:
    """Why a live check learnt nothing, when Salesforce refused for a reason that is not
    about the link (only its grant, org or API access are)."""
    if refused.error == UNEXPECTED:
        return NOT_AS_EXPECTED
    if refused.error in CONNECTED_APP_ERRORS:
        return connected_app_problem(refused)
    if refused.error in ("rate_limit_exceeded", "REQUEST_LIMIT_EXCEEDED"):
        return (
            f"Salesforce is limiting requests for now ({refused.error}), so the link was not "
            "checked; this says nothing about the link. It is checked again later."
        )
    detail = f": {refused.description}" if refused.description else ""
    return (
        f"Salesforce would not check the link now ({refused.error}{detail}); this says "
        "nothing about the link itself."
    )


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
        case Busy():
            return "busy"
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
            return _LINK_PROBLEM_TITLES[problem], _LINK_PROBLEMS[problem]
        case LoginCancelled():
            return "Linking cancelled", (
                "You did not allow access in Salesforce, so nothing was linked. "
                "Run /vcc link to try again."
            )
        case SalesforceLoginFailed(error=code) if code in CONNECTED_APP_ERRORS:
            return "Salesforce refused the bot's connected app", (
                f"Salesforce answered {code}, about the bot's connected app, not your API "
                f"user. Nothing was linked. Tell the bot's operator: {connected_app_fix(error)}."
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
        case Busy():
            return "The bot is busy", (
                "Too many requests are waiting, so this one was not started and nothing "
                "changed. Try again in a minute."
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
                "app, so it was refused and nothing was linked. Tell the bot's operator to check "
                "SALESFORCE_CLIENT_SECRET, then run /vcc link again."
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
                "NAME.my.salesforce.com; a sandbox's NAME--SANDBOX.sandbox.my.salesforce.com; "
                "or NAME.develop.my.salesforce.com (Developer Edition), and likewise "
                ".scratch., .demo., .patch. or .trailblaze. (Trailhead Playground) for those "
                "orgs. Setup → My Domain shows it."
            )
        case InvalidAccountId(value=value):
            return "Not a VCC account id", (
                f"{value!r} is not a VCC account id: use 1 to 64 letters, digits, '.', '-' or '_'."
            )
    return "Something went wrong", "Nothing changed. Try again."


# ---- the browser's pages (bot/web.py) ------------------------------------------------------

PAGE_BRAND = "VCC · Salesforce link"
CONTINUE_ADVICE = (
    'Use the API user\'s own username and password. Do not use "Log in as another user" '
    "from an admin session: Salesforce would link the wrong user."
)
LINKED_TITLE = "Linked — you can close this window"
LINKED_DETAILS = "The details are in your Slack DMs."
# On a page, trying again means a new login link: the one just used may be spent.
PAGE_RETRY = "To try again, run /vcc link in Slack for a new login link."


def continue_title(account_id: str) -> str:
    return f"Link VCC account {account_id}"


def continue_steps(environment: str) -> str:
    return (
        f"Continue to Salesforce {environment}, log in directly as the API user, and click "
        "Allow. You come back to this window when it is done."
    )


def continue_button(environment: str) -> str:
    return f"Continue to Salesforce {environment}"


def linked_summary(account_id: str, org_id: str | None, username: str | None) -> str:
    return f"VCC account {account_id} is linked to Salesforce org {org_id} as API user {username}."


def describe_on_page(error: LinkError) -> tuple[str, str]:
    """describe() for a browser page: every one says what happened and what to do next."""
    title, detail = describe(error)
    if isinstance(error, SalesforceDown | Busy | DatabaseDown):
        detail = f"{detail} {PAGE_RETRY}"
    return title, detail
