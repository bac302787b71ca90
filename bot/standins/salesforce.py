"""Fake Salesforce login host: OAuth web-server flow with PKCE, identity URL and SOQL query.

One instance stands for one login host (production or sandbox); its URL is also the instance URL.

Contract: what the fake claims Salesforce does, and where that is written down. A test
that relies on anything else is testing the fake, not the bot.

- Authorize, unknown consumer key: Salesforce's own error page, 400, no redirect to the
  callback ("error=invalid_client_id&error_description=client identifier invalid").
  wadewegner/Force.com-Toolkit-for-NET#244, forcedotcom/postman-salesforce-apis#42.
- Authorize, redirect_uri not the connected app's callback: Salesforce's own page, 400.
- Authorize, a connected app not installed in the org, for a user without "Approve
  Uninstalled Connected Apps": Salesforce's own page, OAUTH_APPROVAL_ERROR_GENERIC with
  invalid_client "app must be installed into org"; never the callback. Salesforce Help
  "Prepare for Connected App Usage Restrictions Change" (article 005132365, Sept. 2025);
  docs.movedata.io "Salesforce Connected App usage restrictions".
- Authorize, an External Client App not installed in the org: OAUTH_EC_APP_NOT_FOUND on
  Salesforce's own page, after the login. PipedreamHQ/pipedream#21557.
- Other authorize errors (Deny, ...) come back to the callback as ?error=&state=.
  Salesforce Help "OAuth 2.0 Authorization Errors" (remoteaccess_oauth_flow_errors).
- Token endpoint, unknown consumer key: 400 invalid_client_id "client identifier invalid"
  (omniphx/forrest#184; jsforce/jsforce#762: the connected app was deleted); a wrong
  consumer secret: 400 invalid_client "invalid client credentials" (restforce#338). No
  public source shows a request with no client_id at all: kept as invalid_client.
- Token endpoint, authorization_code with a redirect_uri that is not the connected app's
  callback URL: 400 redirect_uri_mismatch "redirect_uri must match configuration", after
  the client is authenticated and before the code is looked at (share-extras/share-oauth
  OAuth2Return.java lists it among Salesforce's token answers; Salesforce Help 001122778
  gives the same code and words). A code Salesforce never issued: invalid_grant.
- Refresh of a revoked, expired or evicted token: invalid_grant "expired access/refresh
  token" (Salesforce Help "OAuth 2.0 Authorization Errors").
- Refresh for a deactivated or frozen user: invalid_grant "inactive user" (restforce#303),
  not a code of its own.
- Refresh for a user outside its profile's login IP ranges or hours: invalid_grant
  "IP restricted or invalid login hours" (the same Help page).
- Five approvals per user and connected app; a sixth silently revokes the oldest.
- Refresh-token rotation, when on, issues a new refresh token and kills the old one
  (Salesforce Help "OAuth 2.0 Refresh Token Flow for Renewed Sessions").
- Revoke: 200, or 400 with invalid_token or unsupported_token_type; which error for which
  token is not documented, so a test picks one with `revoke_refusal`. Salesforce Mobile
  SDK Developer Guide "Revoking OAuth Tokens"; Help "Revoke OAuth Tokens Programmatically".
- REST API versions: only those in `api_versions` are served; any other answers 404
  NOT_FOUND "The requested resource does not exist" (restforce#160,
  tprouvot/Salesforce-Inspector-reloaded#744). GET /services/data/ lists them and needs
  no authentication (REST API Developer Guide, "Versions").
- Opt-in (`browser_pages = True`, for a real browser; other tests never set it): the
  authorize URL shows a login page (Username, Password, Log In), then the approval page
  with Allow and Deny and the requested scopes' labels (Salesforce Help "Application
  Access Request", platform.remoteaccess_request.htm; scope labels from the Mobile SDK
  Developer Guide "Scope Parameter Values"). Allow goes on as the flow above; Deny comes
  back to the callback as access_denied "end-user denied authorization" (Help "OAuth 2.0
  Authorization Errors"). Any non-empty password is taken for `login_as`.
- SOQL on UserPermissionAccess: only the fields in USER_PERMISSION_ACCESS_FIELDS exist
  (Salesforce Field Reference "UserPermissionAccess"); any other, or one an org lacks
  (`unsupported_fields`), answers 400 INVALID_FIELD "No such column 'X' on entity ...".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from ._server import (
    FakeServer,
    Recorded,
    Reply,
    add_query,
    json_reply,
    redirect_reply,
    text_reply,
)

PERMISSION_FIELDS = (
    "PermissionsApiEnabled",
    "PermissionsEditTask",
    "PermissionsApiUserOnly",
    "PermissionsViewAllUsers",
    "PermissionsViewAllData",
    "PermissionsModifyAllData",
)
# The UserPermissionAccess fields this fake knows: a few of the Field Reference's, the
# bot's among them. Salesforce answers INVALID_FIELD for any other.
USER_PERMISSION_ACCESS_FIELDS = (
    "Id",
    "LastCacheUpdate",
    *PERMISSION_FIELDS,
    "PermissionsCustomizeApplication",
    "PermissionsEditEvent",
    "PermissionsManageUsers",
    "PermissionsViewSetup",
)
MAX_APPROVALS = 5  # refresh tokens per user per connected app
DEFAULT_SCOPE = "api id refresh_token"
# The REST API versions an org serves (Winter '24 to Winter '25 here); any other is 404.
API_VERSIONS = ("59.0", "60.0", "61.0", "62.0")
_REFRESH_SCOPES = {"refresh_token", "offline_access", "full"}
_ID_PATH = re.compile(r"/id/(\w+)/(\w+)/?")
_QUERY_PATH = re.compile(r"/services/data/v(\d+\.\d+)/query/?")
_SOQL = re.compile(r"select\s+(?P<fields>.+?)\s+from\s+(?P<obj>\w+)(?P<rest>\s.*)?", re.I)
_AUTHORIZE_ERRORS = {
    "access_denied": "end-user denied authorization",
    "invalid_grant": "IP restricted or invalid login hours",
    "inactive_user": "user is inactive",
    "inactive_org": "organization is inactive",
    "invalid_scope": "the requested scope is not allowed",
    "rate_limit_exceeded": "too many requests",
}


@dataclass(eq=False)  # identity semantics: users are dict keys and compared with `is`
class SfUser:
    org_id: str
    user_id: str
    username: str
    permissions: dict[str, bool] = field(default_factory=dict)
    active: bool = True
    frozen: bool = False  # Setup → Users → Freeze: still active, but cannot log in
    login_restricted: bool = False  # outside its profile's login IP ranges or hours
    approve_uninstalled: bool = False  # "Approve Uninstalled Connected Apps"
    user_type: str = "STANDARD"
    display_name: str = ""
    email: str = ""

    @property
    def can_log_in(self) -> bool:
        return self.active and not self.frozen


@dataclass(eq=False)
class _Grant:
    """One approval: a refresh token plus the access tokens minted from it."""

    user: SfUser
    scope: str
    refresh_token: str


@dataclass
class _Code:
    user: SfUser
    challenge: str
    redirect_uri: str
    scope: str
    issued: float


@dataclass
class _Access:
    user: SfUser
    grant: _Grant | None


def pkce_challenge(verifier: str) -> str:
    """S256 code challenge: base64url, no padding, of SHA-256(verifier)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_signature(secret: str, identity_url: str, issued_at: str) -> str:
    mac = hmac.new(secret.encode(), (identity_url + issued_at).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def _oauth_error(error: str, description: str, status: int = 400) -> Reply:
    return json_reply(status, {"error": error, "error_description": description})


def _rest_error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, [{"message": message, "errorCode": code}])


def _html(status: int, title: str, detail: str) -> Reply:
    page = f"<html><body><h1>{html.escape(title)}</h1><p>{html.escape(detail)}</p></body></html>"
    return text_reply(status, page, "text/html; charset=utf-8")


def _error_page(error: str, description: str) -> Reply:
    """Salesforce's own error page: shown to the browser, never sent to the callback."""
    return _html(400, error, f"error={error}&error_description={quote(description)}")


def _same_id(a: str, b: str) -> bool:
    return a[:15] == b[:15]  # Salesforce accepts 15- and 18-character ids alike


# -- the opt-in browser pages (see the contract): plain look-alikes of Salesforce's --------

_APPROVAL_PATH = "/setup/secur/RemoteAccessAuthorizationPage.apexp"
_SCOPE_LABELS = {  # Mobile SDK Developer Guide, "Scope Parameter Values"
    "api": "Manage user data via APIs (api)",
    "id": "Access the identity URL service (id, profile, email, address, phone)",
    "refresh_token": "Perform requests at any time (refresh_token, offline_access)",
    "offline_access": "Perform requests at any time (refresh_token, offline_access)",
}
_SF_STYLE = (
    "*{box-sizing:border-box}body{margin:0;min-height:100vh;display:flex;flex-direction:column;"
    "align-items:center;justify-content:center;padding:1rem;background:#f3f3f3;color:#181818;"
    "font:1rem/1.5 system-ui,'Liberation Sans',sans-serif}.logo{margin:0 0 1.25rem;"
    "font-size:2rem;font-weight:700;color:#0b5cab}main{width:100%;max-width:24rem;padding:"
    "1.5rem;background:#fff;border:1px solid #dddbda;border-radius:4px}h1{margin:0 0 1rem;"
    "font-size:1.25rem}label{display:block;margin:.75rem 0 .25rem;font-size:.875rem}"
    "input{width:100%;padding:.6rem;font:inherit;border:1px solid #747474;border-radius:4px}"
    "button{min-height:44px;padding:.6rem 1.2rem;font:inherit;border-radius:4px;cursor:pointer}"
    ".primary{width:100%;margin-top:1.25rem;color:#fff;background:#0b5cab;border:1px solid "
    "#0b5cab}.row{display:flex;gap:.75rem;justify-content:flex-end;margin-top:1.25rem}"
    ".row button{width:auto;margin:0}.secondary{color:#0b5cab;background:#fff;border:1px solid "
    "#c9c9c9}.error{color:#ba0517}ul{padding-left:1.25rem}footer{margin-top:1rem;"
    "font-size:.8125rem;color:#5c5c5c}"
)


def _sf_page(title: str, body: str) -> Reply:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f'<style>{_SF_STYLE}</style></head><body><p class="logo">salesforce</p><main>'
        f"<h1>{html.escape(title)}</h1>{body}</main><footer>Loopback fake of Salesforce's "
        "login host (bot/standins/salesforce.py)</footer></body></html>"
    )
    return text_reply(200, page, "text/html; charset=utf-8")


def _login_page(key: str, host: str, *, failed: bool = False) -> Reply:
    error = (
        '<p class="error" role="alert">Please check your username and password. If you still '
        "can't log in, contact your Salesforce administrator.</p>"
        if failed
        else ""
    )
    return _sf_page(
        f"Log in to Salesforce ({host})",
        f'{error}<form method="post" action="/"><input type="hidden" name="key" '
        f'value="{html.escape(key)}"><label for="username">Username</label><input '
        'id="username" name="username" autocomplete="username"><label for="password">'
        'Password</label><input id="password" name="password" type="password" '
        'autocomplete="current-password"><button class="primary" type="submit">Log In'
        "</button></form>",
    )


def _approval_page(key: str, app: str, username: str, scopes: list[str]) -> Reply:
    listed = "".join(f"<li>{html.escape(s)}</li>" for s in dict.fromkeys(scopes))
    return _sf_page(
        "Allow Access?",
        f"<p><strong>{html.escape(app)}</strong> is asking to:</p><ul>{listed}</ul><p>Do you "
        f'want to allow access for {html.escape(username)}?</p><form method="post" '
        f'action="{_APPROVAL_PATH}"><input type="hidden" name="key" value="{html.escape(key)}">'
        '<div class="row"><button class="secondary" name="action" value="Deny">Deny</button>'
        '<button class="primary" name="action" value="Allow">Allow</button></div></form>',
    )


class FakeSalesforce(FakeServer):
    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        redirect_uri: str | None = None,
        name: str = "production",
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.name = name
        self.users: list[SfUser] = []
        self.login_as: SfUser | None = None
        self.authorize_error: str | None = None
        self.authorize_error_description: str | None = None
        self.tamper_signature = False
        self.token_overrides: dict[str, str] = {}  # e.g. {"instance_url": "https://evil"}
        self.unsupported_fields: set[str] = set()  # UserPermissionAccess fields the org lacks
        self.api_versions: tuple[str, ...] = API_VERSIONS
        self.app_installed = True  # the connected app is installed in this org
        self.app_kind = "connected"  # or "external": an External Client App
        self.revoke_refusal: str | None = None  # e.g. "unsupported_token_type"
        self.rotate_refresh_tokens = False
        self.code_ttl = 900.0  # Salesforce codes expire after 15 minutes
        self.authorize_requests: list[dict[str, str]] = []
        self.revoked: list[str] = []  # tokens revoked through /revoke
        self.evicted: list[str] = []  # refresh tokens pushed out by the five-approval limit
        self.issued: list[str] = []  # refresh tokens issued for codes, oldest first
        self.max_approvals = MAX_APPROVALS  # per user; a test may lift it to isolate other rules
        self._codes: dict[str, _Code] = {}
        self._grants: list[_Grant] = []  # oldest first
        self._access: dict[str, _Access] = {}
        self.browser_pages = False  # HTML login and approval pages, for a real browser
        self.app_name = "VCC Bot"  # the connected app's name, shown on the approval page
        self._logins: dict[str, dict[str, str]] = {}  # a login page's key -> its authorize query

    def __repr__(self) -> str:
        return f"<FakeSalesforce {self.name} {self._httpd and self.url}>"

    # -- test API ------------------------------------------------------------------------------
    def add_user(
        self,
        org_id: str,
        user_id: str,
        username: str,
        permissions: dict[str, bool] | None = None,
        **kw: Any,
    ) -> SfUser:
        perms = dict.fromkeys(PERMISSION_FIELDS, True) if permissions is None else permissions
        user = SfUser(org_id, user_id, username, dict(perms), **kw)
        with self._lock:
            self.users.append(user)
        return user

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        body: str | dict[str, Any] | list[Any] | None = None,
        count: int = 1,
    ) -> None:
        """Answer the next `count` requests under path_prefix with status (0: drop the socket)."""
        if status == 0:
            reply = Reply(0)
        elif isinstance(body, str):
            ctype = "text/html" if body.lstrip().startswith("<") else "text/plain"
            reply = text_reply(status, body, f"{ctype}; charset=utf-8")
        elif body is not None:
            reply = json_reply(status, body)
        elif path_prefix.startswith("/services/oauth2"):
            reply = _oauth_error("unknown_error", "retry your request", status)
        else:
            code, message = {
                401: ("INVALID_SESSION_ID", "Session expired or invalid"),
                403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
                503: ("SERVER_UNAVAILABLE", "Server unavailable"),
            }.get(status, ("UNKNOWN_EXCEPTION", "An unexpected error occurred."))
            reply = _rest_error(status, code, message)
        self._inject(lambda path: path.startswith(path_prefix), reply, count)

    def live_refresh_tokens(self, user: SfUser) -> list[str]:
        with self._lock:
            return [g.refresh_token for g in self._grants if g.user is user]

    def live_access_tokens(self, user: SfUser) -> list[str]:
        with self._lock:
            return [t for t, a in self._access.items() if a.user is user]

    def revoke_user_tokens(self, user: SfUser) -> None:
        """As if an admin revoked the app's access for this user."""
        with self._lock:
            for grant in [g for g in self._grants if g.user is user]:
                self._kill(grant)
            for token in self.live_access_tokens(user):
                del self._access[token]

    def identity_url(self, user: SfUser) -> str:
        return f"{self.url}/id/{user.org_id}/{user.user_id}"

    # -- routing -------------------------------------------------------------------------------
    def handle(self, req: Recorded) -> Reply:
        injected = self._take_injected(req.path)
        if injected is not None:
            return injected
        path, method = req.path, req.method
        if self.browser_pages and (page := self._browser_page(req)) is not None:
            return page
        if path == "/services/oauth2/authorize" and method in ("GET", "POST"):
            return self._authorize({**req.query, **req.form})
        if path == "/services/oauth2/token" and method == "POST":
            return self._token(req)
        if path == "/services/oauth2/revoke" and method in ("GET", "POST"):
            return self._revoke(req.form.get("token") or req.query.get("token", ""))
        if (m := _ID_PATH.fullmatch(path)) and method in ("GET", "POST"):
            return self._identity(req, m[1], m[2])
        if (m := _QUERY_PATH.fullmatch(path)) and method == "GET":
            return self._query(req, m[1])
        if path.rstrip("/") == "/services/data" and method == "GET":
            # The Versions resource; no authentication (REST API Developer Guide, "Versions").
            return json_reply(
                200,
                [
                    {"label": f"v{v}", "url": f"/services/data/v{v}", "version": v}
                    for v in self.api_versions
                ],
            )
        return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")

    # -- opt-in pages for a real browser: log in, then Allow or Deny ------------------------
    def _browser_page(self, req: Recorded) -> Reply | None:
        q = {**req.query, **req.form}
        if req.path == "/services/oauth2/authorize" and req.method == "GET":
            redirect_uri = q.get("redirect_uri", "")
            if q.get("client_id") != self.client_id or not redirect_uri:
                return None  # Salesforce's own error page, before any login
            if self.redirect_uri not in (None, redirect_uri):
                return None
            key = secrets.token_urlsafe(16)
            self._logins[key] = q
            return _login_page(key, self.name)
        if req.path == "/" and req.method == "POST":  # the login form
            asked = self._logins.get(q.get("key", ""))
            user = self.login_as
            if asked is None or user is None:
                return _html(400, "Session expired", "Start again from the app.")
            if q.get("username") != user.username or not q.get("password"):
                return _login_page(q["key"], self.name, failed=True)
            labels = [_SCOPE_LABELS[s] for s in (asked.get("scope") or DEFAULT_SCOPE).split()]
            return _approval_page(q["key"], self.app_name, user.username, labels)
        if req.path == _APPROVAL_PATH and req.method == "POST":
            asked = self._logins.pop(q.get("key", ""), None)
            if asked is None:
                return _html(400, "Session expired", "Start again from the app.")
            if q.get("action") == "Allow":
                return self._authorize(asked)
            self.authorize_requests.append(asked)
            params = {
                "error": "access_denied",
                "error_description": "end-user denied authorization",
                "state": asked.get("state"),
            }
            return redirect_reply(add_query(asked["redirect_uri"], params))
        return None

    # -- OAuth ---------------------------------------------------------------------------------
    def _authorize(self, q: dict[str, str]) -> Reply:
        self.authorize_requests.append(q)
        # Without a known app there is no callback to trust: Salesforce's own page, 400
        # (wadewegner/Force.com-Toolkit-for-NET#244, forcedotcom/postman-salesforce-apis#42).
        if q.get("client_id") != self.client_id:
            return _error_page("invalid_client_id", "client identifier invalid")
        redirect_uri = q.get("redirect_uri", "")
        if not redirect_uri or self.redirect_uri not in (None, redirect_uri):
            return _html(400, "redirect_uri_mismatch", "redirect_uri must match configuration")
        state = q.get("state")

        def back(error: str, description: str) -> Reply:
            params = {"error": error, "error_description": description, "state": state}
            return redirect_reply(add_query(redirect_uri, params))

        if q.get("response_type") != "code":
            return back("unsupported_response_type", "response type not supported")
        if not q.get("code_challenge"):
            return back("invalid_request", "missing required code challenge")
        if q.get("code_challenge_method") != "S256":
            return back("invalid_request", "invalid code challenge method")
        if self.login_as is None:
            return _html(400, "Login failed", "no user to log in")
        # After the login, an app the org has not installed stops at Salesforce's page:
        # External Client Apps always (PipedreamHQ/pipedream#21557); connected apps unless
        # the user may approve uninstalled ones (Help article 005132365, docs.movedata.io).
        if not self.app_installed and self.app_kind == "external":
            return _html(400, "OAUTH_EC_APP_NOT_FOUND", "We can't authorize you.")
        if not self.app_installed and not self.login_as.approve_uninstalled:
            return _html(
                400,
                "OAUTH_APPROVAL_ERROR_GENERIC",
                "We can't authorize you because of an OAuth error. "
                "error=invalid_client&error_description=app must be installed into org",
            )
        if self.authorize_error:
            description = self.authorize_error_description or _AUTHORIZE_ERRORS.get(
                self.authorize_error, self.authorize_error.replace("_", " ")
            )
            return back(self.authorize_error, description)
        # Standard base64 with '==' padding, so the code needs URL-encoding like real ones.
        code = "aPrx" + base64.b64encode(secrets.token_bytes(64)).decode()
        self._codes[code] = _Code(
            self.login_as,
            q["code_challenge"],
            redirect_uri,
            q.get("scope") or DEFAULT_SCOPE,
            time.monotonic(),
        )
        return redirect_reply(add_query(redirect_uri, {"code": code, "state": state}))

    def _client_refused(self, req: Recorded) -> Reply | None:
        """None when the client authenticates; else Salesforce's answer, which tells an
        unknown consumer key from a wrong secret."""
        client_id, secret = req.form.get("client_id"), req.form.get("client_secret")
        auth = req.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                cid, _, sec = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:  # binascii.Error and UnicodeDecodeError both derive from it
                return _oauth_error("invalid_client", "invalid client credentials")
            client_id, secret = unquote(cid), unquote(sec)
        if client_id and client_id != self.client_id:  # omniphx/forrest#184
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if client_id != self.client_id or secret != self.client_secret:  # restforce#338
            return _oauth_error("invalid_client", "invalid client credentials")
        return None

    def _token(self, req: Recorded) -> Reply:
        refused = self._client_refused(req)
        if refused is not None:
            return refused
        form = req.form
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            if self.redirect_uri is not None and form.get("redirect_uri") != self.redirect_uri:
                return _oauth_error(
                    "redirect_uri_mismatch", "redirect_uri must match configuration"
                )
            code = self._codes.pop(form.get("code", ""), None)  # single use, even on failure
            if code is None or time.monotonic() - code.issued > self.code_ttl:
                return _oauth_error("invalid_grant", "invalid authorization code")
            if form.get("redirect_uri") != code.redirect_uri:
                return _oauth_error("invalid_grant", "redirect_uri must match configuration")
            verifier = form.get("code_verifier", "")
            if not verifier or pkce_challenge(verifier) != code.challenge:
                return _oauth_error("invalid_grant", "invalid code verifier")
            if (refused_user := self._user_refused(code.user)) is not None:
                return refused_user
            grant = None
            if _REFRESH_SCOPES & set(code.scope.split()):
                grant = _Grant(code.user, code.scope, self._new_refresh_token())
                self.issued.append(grant.refresh_token)
                self._approve(grant)
            return self._issue(code.user, grant, code.scope, grant.refresh_token if grant else None)
        if grant_type == "refresh_token":
            grant = self._find_grant(form.get("refresh_token", ""))
            if grant is None:
                return _oauth_error("invalid_grant", "expired access/refresh token")
            if (refused_user := self._user_refused(grant.user)) is not None:
                return refused_user
            new_refresh = None
            if self.rotate_refresh_tokens:
                grant.refresh_token = new_refresh = self._new_refresh_token()
            return self._issue(grant.user, grant, grant.scope, new_refresh)
        return _oauth_error("unsupported_grant_type", "grant type not supported")

    def _user_refused(self, user: SfUser) -> Reply | None:
        """A user who may not log in now: invalid_grant, the reason in the description."""
        if not user.can_log_in:  # deactivated or frozen: restforce#303
            return _oauth_error("invalid_grant", "inactive user")
        if user.login_restricted:  # Help "OAuth 2.0 Authorization Errors"
            return _oauth_error("invalid_grant", "IP restricted or invalid login hours")
        return None

    def _approve(self, grant: _Grant) -> None:
        self._grants.append(grant)
        mine = [g for g in self._grants if g.user is grant.user]
        for old in mine[: max(0, len(mine) - self.max_approvals)]:
            self._kill(old)  # silently, as Salesforce does
            self.evicted.append(old.refresh_token)

    def _issue(self, user: SfUser, grant: _Grant | None, scope: str, refresh: str | None) -> Reply:
        access = f"{user.org_id[:15]}!AQ{secrets.token_urlsafe(72)}"
        self._access[access] = _Access(user, grant)
        # A test may rewrite what the response names (as a tampering proxy would); the
        # signature covers `id` and `issued_at` only, as Salesforce documents, so an
        # `instance_url` rewrite keeps it valid.
        identity = self.token_overrides.get("id", self.identity_url(user))
        issued_at = str(int(time.time() * 1000))
        key = self.client_secret + ("-tampered" if self.tamper_signature else "")
        body: dict[str, str] = {"access_token": access}
        if refresh:
            body["refresh_token"] = refresh
        body |= {
            "signature": token_signature(key, identity, issued_at),
            "scope": scope,
            "instance_url": self.token_overrides.get("instance_url", self.url),
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
        return json_reply(200, body, {"Cache-Control": "no-cache,must-revalidate,max-age=0"})

    def _revoke(self, token: str) -> Reply:
        # 400 invalid_token or unsupported_token_type, for "all error conditions" (Mobile
        # SDK Developer Guide, "Revoking OAuth Tokens"); which one when is not documented.
        if self.revoke_refusal:
            descriptions = {"unsupported_token_type": "Token type not supported"}
            return _oauth_error(self.revoke_refusal, descriptions.get(self.revoke_refusal, ""))
        grant = self._find_grant(token)
        if grant is not None:
            self._kill(grant)
        elif token and token in self._access:
            del self._access[token]
        else:
            return _oauth_error("invalid_token", "Invalid token")
        self.revoked.append(token)
        return Reply(200)

    def _new_refresh_token(self) -> str:
        return "5Aep861" + secrets.token_urlsafe(64)

    def _find_grant(self, refresh_token: str) -> _Grant | None:
        return next((g for g in self._grants if g.refresh_token == refresh_token), None)

    def _kill(self, grant: _Grant) -> None:
        self._grants.remove(grant)
        for token in [t for t, a in self._access.items() if a.grant is grant]:
            del self._access[token]

    def _bearer(self, req: Recorded) -> _Access | None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            token = req.query.get("oauth_token", "")
        access = self._access.get(token.strip())
        return access if access is not None and access.user.can_log_in else None

    # -- identity and data API -----------------------------------------------------------------
    def _identity(self, req: Recorded, org_id: str, user_id: str) -> Reply:
        access = self._bearer(req)
        if access is None or not (
            _same_id(access.user.org_id, org_id) and _same_id(access.user.user_id, user_id)
        ):
            return text_reply(403, "Bad_OAuth_Token")
        user, base = access.user, self.url
        display = user.display_name or user.username.split("@")[0]
        first, _, last = display.rpartition(" ")
        org15 = user.org_id[:15]
        data = f"{base}/services/data/v{{version}}"
        urls = {
            "enterprise": f"{base}/services/Soap/c/{{version}}/{org15}",
            "metadata": f"{base}/services/Soap/m/{{version}}/{org15}",
            "partner": f"{base}/services/Soap/u/{{version}}/{org15}",
            "rest": f"{data}/",
            "sobjects": f"{data}/sobjects/",
            "search": f"{data}/search/",
            "query": f"{data}/query/",
            "recent": f"{data}/recent/",
            "tooling_soap": f"{base}/services/Soap/T/{{version}}/{org15}",
            "tooling_rest": f"{data}/tooling/",
            "profile": f"{base}/{user.user_id[:15]}",
            "feeds": f"{data}/chatter/feeds",
            "groups": f"{data}/chatter/groups",
            "users": f"{data}/chatter/users",
            "feed_items": f"{data}/chatter/feed-items",
            "feed_elements": f"{data}/chatter/feed-elements",
            "custom_domain": base,
        }
        version = req.query.get("version")
        if version:  # the real endpoint fills the placeholder when asked to
            version = self.api_versions[-1] if version == "latest" else version
            urls = {k: v.replace("{version}", version) for k, v in urls.items()}
        return json_reply(
            200,
            {
                "id": self.identity_url(user),
                "asserted_user": True,
                "user_id": user.user_id,
                "organization_id": user.org_id,
                "username": user.username,
                "nick_name": user.username.split("@")[0],
                "display_name": display,
                "email": user.email or (user.username if "@" in user.username else ""),
                "email_verified": True,
                "first_name": first or None,
                "last_name": last,
                "timezone": "Europe/London",
                "photos": {},
                "mobile_phone": None,
                "mobile_phone_verified": False,
                "is_lightning_login_user": False,
                "status": {"created_date": None, "body": None},
                "urls": urls,
                "active": user.active,
                "user_type": user.user_type,
                "language": "en_US",
                "locale": "en_US",
                "utcOffset": 0,
                "last_modified_date": "2024-01-02T03:04:05Z",
                "is_app_installed": True,
            },
        )

    def _query(self, req: Recorded, version: str) -> Reply:
        if version not in self.api_versions:  # restforce#160, Salesforce-Inspector-reloaded#744
            return _rest_error(404, "NOT_FOUND", "The requested resource does not exist")
        access = self._bearer(req)
        if access is None:
            return _rest_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        soql = " ".join(req.query.get("q", "").split())  # one line, so columns are simple
        m = _SOQL.fullmatch(soql)
        fields = [f.strip() for f in m["fields"].split(",")] if m else []
        if m is None or not all(re.fullmatch(r"\w+", f) for f in fields):
            return _rest_error(400, "MALFORMED_QUERY", f"unexpected token: '{soql}'")

        def located(offset: int, problem: str) -> str:
            return f"\n{soql}\n{' ' * offset}^\nERROR at Row:1:Column:{offset + 1}\n{problem}"

        if m["obj"].lower() != "userpermissionaccess":
            problem = (
                f"sObject type '{m['obj']}' is not supported. If you are attempting to use a "
                "custom object, be sure to append the '__c' after the entity name. Please "
                "reference your WSDL or the describe call for the appropriate names."
            )
            return _rest_error(400, "INVALID_TYPE", located(m.start("obj"), problem))
        # A field UserPermissionAccess does not have (Field Reference), or one this org
        # lacks, is INVALID_FIELD, never silently false.
        known = {f.lower() for f in USER_PERMISSION_ACCESS_FIELDS}
        known -= {f.lower() for f in self.unsupported_fields}
        for name in fields:
            if name.lower() not in known:
                problem = (
                    f"No such column '{name}' on entity 'UserPermissionAccess'. If you are "
                    "attempting to use a custom field, be sure to append the '__c' after the "
                    "custom field name. Please reference your WSDL or the describe call for "
                    "the appropriate names."
                )
                named = re.search(rf"\b{name}\b", m["fields"])
                assert named is not None  # `name` was split out of these fields
                offset = m.start("fields") + named.start()
                return _rest_error(400, "INVALID_FIELD", located(offset, problem))
        record_id = "000000000000000AAA"
        record: dict[str, Any] = {
            "attributes": {
                "type": "UserPermissionAccess",
                "url": f"/services/data/v{version}/sobjects/UserPermissionAccess/{record_id}",
            }
        }
        # Columns come back under their API names, whatever case the query used.
        granted = {k.lower(): bool(v) for k, v in access.user.permissions.items()}
        api_names = {f.lower(): f for f in USER_PERMISSION_ACCESS_FIELDS}
        for name in fields:
            api_name = api_names[name.lower()]
            if api_name == "Id":
                record["Id"] = record_id
            elif api_name == "LastCacheUpdate":
                record["LastCacheUpdate"] = "2024-01-02T03:04:05.000+0000"
            else:
                record[api_name] = granted.get(name.lower(), False)
        return json_reply(200, {"totalSize": 1, "done": True, "records": [record]})
