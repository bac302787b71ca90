"""Fake Slack: the Web API methods the bot uses, response_url endpoints, many workspaces, and
Slack's OAuth v2 install flow with token rotation.

Contract: what this fake claims about Slack, and where Slack says so.

Messages and interactions
- Every Web API answer is HTTP 200 with `ok` and `error`, except 429 with `Retry-After`
  when rate-limited (api.slack.com/apis/rate-limits; api.slack.com/web#responses).
- A `response_url` takes at most 5 posts within 30 minutes (api.slack.com/interactivity/
  handling#message_responses).
- A slash command's `response_url` only ever adds messages: `replace_original` and
  `delete_original` do not apply to the command's invocation, which is no message of the
  app's (slackapi/bolt-python#1268, slackapi/bolt-js#2287). An interaction's `response_url`
  may replace or delete the message that holds the clicked component.
- A `trigger_id` is good for one `views.open` within 3 seconds of the interaction; later
  it is `expired_trigger_id` (api.slack.com/interactivity/handling#modal_responses,
  api.slack.com/methods/views.open#errors).
- A confirmation dialog's `title`, `text`, `confirm` and `deny` are plain_text objects
  (api.slack.com/reference/block-kit/composition-objects#confirm); anything else is
  `invalid_blocks`. At most 50 blocks a message and 100 a view.
- `views.publish` publishes a user's Home tab: a view of type `home` with at most 100
  blocks; anything else is `invalid_arguments` (api.slack.com/methods/views.publish#errors,
  api.slack.com/reference/surfaces/views). Within one block no two elements share an
  `action_id`, and no two blocks of a view share a `block_id` (api.slack.com/reference/
  block-kit/blocks#actions: "should be unique among all other action_ids in the containing
  block"; a duplicate block_id is refused as invalid_blocks).
- `app_home_opened` (api.slack.com/events/app_home_opened) carries `user`, `channel`, `tab`
  ("home" or "messages"), `event_ts`, and the published `view` once there is one; it needs
  no scope.
- Posting in an archived channel is `is_archived`; in a private channel the bot is not in,
  `not_in_channel`; in an unknown one, `channel_not_found` (api.slack.com/methods/
  chat.postMessage#errors).
- conversations.info answers a conversation object with `is_member`, `is_private` and
  `is_archived` (docs.slack.dev/reference/objects/conversation-object). It needs
  `channels:read` for a public channel, else `missing_scope` with `needed` and `provided`
  (api.slack.com/conversations-api; node-slack-sdk's response types carry both fields).
  A private channel the bot is not in (those in `not_in_channel`) is `channel_not_found`:
  groups:read shows only private channels the app has been added to (docs.slack.dev/
  reference/scopes/groups.read).

Workspaces and tokens
- Each token belongs to one installation. `auth.test` answers that workspace's `url`,
  `team`, `team_id`, the bot's `user_id` and `bot_id`, `is_enterprise_install`, and
  `enterprise_id` only inside an Enterprise Grid organization (docs.slack.dev/reference/
  methods/auth.test: "When working against a team within an Enterprise organization, you'll
  also find their enterprise_id here"); an expiring token also reports `expires_in`
  (node-slack-sdk AuthTestResponse type, docs.slack.dev/tools/node-slack-sdk/reference/
  web-api/type-aliases/AuthTestResponse).
- No token: `not_authed`; an unknown one: `invalid_auth` (docs.slack.dev/reference/methods/
  auth.test#errors); a revoked one: `token_revoked` ("the app has been removed", Slack's
  common method errors; chat.update after an uninstall in CogniQ/CogniQ#72); an expired
  rotating one: `token_expired` (slackapi/bolt-js#1968).
- A workspace's token sees that workspace's users only: users.info for anyone else is
  `user_not_found` (docs.slack.dev/reference/methods/users.info#errors). An org-wide token
  works in every workspace of its organization and takes `team_id` to say which one
  (api.slack.com/enterprise/apps/changes-apis).

OAuth v2 install (docs.slack.dev/authentication/installing-with-oauth)
- GET /oauth/v2/authorize sends the browser to `redirect_uri` with `code` and the `state`
  echoed; a user who cancels comes back with `error=access_denied` and the state
  (docs.slack.dev/legacy/legacy-authentication, unchanged in v2; bolt-python's
  AsyncOAuthFlow.handle_callback reads `error`). An unknown client_id or a redirect_uri that
  is not one of the app's configured ones stays on Slack's error page, without a redirect.
  Without a redirect_uri Slack uses the app's first configured one.
- oauth.v2.access takes the client id and secret by HTTP Basic auth (recommended; what
  slack_sdk sends) or as form fields (docs.slack.dev/reference/methods/oauth.v2.access).
  Errors, from that page: `invalid_client_id`, `bad_client_secret`, `invalid_code` (also a
  used code, and one older than ten minutes: docs.slack.dev/legacy/legacy-authentication),
  `bad_redirect_uri` (redirect_uri must repeat the authorize one if one was sent:
  node-slack-sdk OAuthV2AccessArguments), `invalid_grant_type`, `invalid_refresh_token`.
- Its answer is the documented example's shape (oauth.v2.access "Example responses",
  mirrored in slack-ruby/slack-api-ref methods/oauth/oauth.v2.access.json): `access_token`
  xoxb-, `token_type` "bot", `scope`, `bot_user_id`, `app_id`, `team`, `enterprise` (null
  outside a Grid org), `is_enterprise_install`, `authed_user` (`id`; `scope`,
  `access_token` and `token_type` "user" only when user scopes were asked for).
- An org-wide install answers `team: null`, `enterprise` set, `is_enterprise_install: true`
  (api.slack.com/enterprise/apps/reference, "Sample oauth.v2.access response").
- Token rotation (docs.slack.dev/authentication/using-token-rotation): the access token is
  `xoxe.xoxb-1-…` and expires every 12 hours (`expires_in` 43200), with a `refresh_token`
  `xoxe-1-…`; oauth.v2.access with `grant_type=refresh_token` answers a new pair, and "the
  refresh token is then revoked": using it again is `invalid_refresh_token`
  (slackapi/python-slack-sdk#1242). The refresh answer's fields follow node-slack-sdk's
  OAuthV2TokenRefreshResponse.
- auth.revoke revokes the calling token: `{"ok": true, "revoked": true}`; with `test` set it
  revokes nothing (docs.slack.dev/reference/methods/auth.revoke).
- An uninstall revokes the installation's tokens; Slack then sends `app_uninstalled` and
  `tokens_revoked` (in either order), whose `tokens` lists user ids, not tokens
  (docs.slack.dev/reference/events/app_uninstalled, .../tokens_revoked). Envelopes carry
  `authorizations` (one item: docs.slack.dev/changelog/2020-09-15-events-api-truncate-authed-
  users), `is_ext_shared_channel`, and `enterprise_id` inside a Grid org
  (api.slack.com/enterprise/apps/reference, "Sample event payload").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._server import FakeServer, Recorded, Reply, add_query, json_reply, redirect_reply, text_reply

MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
RESPONSE_URL_USES = 5
RESPONSE_URL_SECONDS = 30 * 60
TRIGGER_SECONDS = 3.0
CODE_SECONDS = 10 * 60  # an OAuth code's life
TOKEN_SECONDS = 12 * 60 * 60  # a rotating access token's life: expires_in 43200
DEFAULT_SCOPE = "commands,chat:write,im:write,users:read,channels:read,groups:read"

Params = dict[str, Any]


@dataclass(frozen=True)
class ApiCall:
    method: str  # Web API method name, e.g. "chat.postMessage"
    params: Params  # query, form and JSON body merged
    headers: dict[str, str]  # lower-cased names
    # Whose token made the call (revoked and expired ones included): a workspace's team id; for
    # an org-wide token, the `team_id` it named or else its enterprise id. None: no or an
    # unknown token, and oauth.v2.access, which takes no token.
    team_id: str | None = None


@dataclass
class Workspace:
    """A workspace the fake plays. The fake keeps `bot_token` and `refresh_token` current."""

    team_id: str
    team_name: str
    bot_user_id: str
    bot_id: str
    enterprise_id: str | None = None  # its Enterprise Grid organization, if any
    enterprise_name: str | None = None
    org_wide: bool = False  # installs approved here are org-wide (one token for the whole org)
    rotating: bool = False  # token rotation: access tokens expire, refresh tokens are single-use
    bot_name: str = "vccbot"
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # users.info payloads
    bot_token: str | None = None  # the newest bot access token; None when not installed
    refresh_token: str | None = None  # the live bot refresh token, when rotating

    @property
    def install_key(self) -> str:
        """What an installation is keyed by: the organization for an org-wide install."""
        return self.enterprise_id if self.org_wide and self.enterprise_id else self.team_id

    @property
    def url(self) -> str:
        if self.org_wide:
            return f"https://{_slug(self.enterprise_name or '')}.enterprise.slack.com/"
        return f"https://{_slug(self.team_name)}.slack.com/"


@dataclass
class _Token:
    value: str
    kind: str  # "bot" or "user" (access tokens), or "refresh"
    workspace: Workspace  # whose installation issued it
    user_id: str  # the bot user, or the user who authorized the app
    scope: str
    refreshes: str = ""  # a refresh token's: "bot" or "user"
    expires_at: float | None = None  # wall clock; None: never
    revoked: bool = False


@dataclass
class _Code:
    workspace: Workspace
    user_id: str
    redirect_uri: str | None  # as the authorize request sent it
    scope: str
    user_scope: str
    issued: float  # monotonic


@dataclass
class _Caller:
    """Who is calling a Web API method: the token, and the workspace the call acts in."""

    token: _Token
    workspace: Workspace
    team_id: str  # what ApiCall and recorded messages say
    users: dict[str, dict[str, Any]]  # the users this token can see


def _err(error: str) -> Params:
    return {"ok": False, "error": error}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "workspace"


def _confirms(node: Any) -> list[Any]:
    """Every confirmation dialog in a block tree (an element's `confirm` object; the
    dialog's own `confirm` field is its button label, not another dialog)."""
    if isinstance(node, dict):
        dialog = node.get("confirm") if isinstance(node.get("confirm"), dict) else None
        found = [dialog] if dialog is not None else []
        return found + [c for k, v in node.items() if v is not dialog for c in _confirms(v)]
    if isinstance(node, list):
        return [c for v in node for c in _confirms(v)]
    return []


def _blocks(value: Any, limit: int = MAX_BLOCKS) -> tuple[list[Any], str | None]:
    """Blocks arrive as a list (JSON body) or a JSON string (form body)."""
    if value is None or value == "":
        return [], None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [], "invalid_blocks_format"
    if not isinstance(value, list):
        return [], "invalid_blocks_format"
    if len(value) > limit or not all(isinstance(b, dict) and "type" in b for b in value):
        return [], "invalid_blocks"
    for confirm in _confirms(value):
        parts = [confirm.get(k) for k in ("title", "text", "confirm", "deny") if k in confirm]
        if not all(isinstance(p, dict) and p.get("type") == "plain_text" for p in parts):
            return [], "invalid_blocks"
    return value, None


def _duplicate_ids(blocks: list[Any]) -> bool:
    block_ids = [b["block_id"] for b in blocks if "block_id" in b]
    if len(block_ids) != len(set(block_ids)):
        return True
    for block in blocks:
        elements = block.get("elements") or []
        accessory = block.get("accessory")
        actions = [e.get("action_id") for e in [*elements, accessory] if isinstance(e, dict)]
        named = [a for a in actions if a]
        if len(named) != len(set(named)):
            return True
    return False


def _client_credentials(params: Params, headers: dict[str, str]) -> tuple[str, str]:
    """HTTP Basic auth first (what slack_sdk sends), else the client_id/client_secret fields."""
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return client_id, secret
    return str(params.get("client_id") or ""), str(params.get("client_secret") or "")


@dataclass
class _ResponseUrl:
    command: bool  # a slash command's: posts only add messages
    created: float
    posts: list[Any]


class FakeSlack(FakeServer):
    def __init__(
        self,
        *,
        bot_token: str | None = None,  # the home workspace's; default: one minted here
        team_id: str = "T0001",
        bot_user_id: str = "U0BOT",
        client_id: str = "1111111111.2222222222",
        client_secret: str = "fake-client-secret",  # noqa: S107 - a fake's well-known secret
        redirect_uris: Sequence[str] = (),  # the app's configured ones; empty: any is accepted
        token_lifetime: int = TOKEN_SECONDS,
    ) -> None:
        super().__init__()
        # The workspace every existing test talks to, installed with `bot_token`. A token
        # minted per fake, not written here: nothing token-shaped ships with the package.
        bot_token = bot_token or f"xoxb-{secrets.token_hex(12)}"
        self.bot_token = bot_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.app_token = "xapp-1-A0VCC-test"
        self.app_id = "A0APP"
        self.verification_token = "fake-verification-token"  # the envelopes' legacy `token`
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = list(redirect_uris)
        self.token_lifetime = token_lifetime
        self.socket_mode_url = ""  # what apps.connections.open hands out
        self.not_in_channel: set[str] = set()
        self.archived: set[str] = set()
        self.calls: list[ApiCall] = []
        # Recorded messages, ephemerals, updates and views carry "_team": ApiCall.team_id.
        self.messages: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.opened_views: list[dict[str, Any]] = []  # modals opened with views.open
        self.authorize_requests: list[dict[str, str]] = []  # /oauth/v2/authorize queries
        self.workspaces: dict[str, Workspace] = {}
        self._tokens: dict[str, _Token] = {}
        self._codes: dict[str, _Code] = {}
        self._installer: tuple[str, str] | None = None  # (team, user) who approves installs
        self._cancel_installs = False
        self._token_seq = 0
        self._event_seq = 0
        self._ims: dict[str, str] = {}  # sorted comma-joined user ids -> IM/MPIM channel id
        self._responses: dict[str, _ResponseUrl] = {}
        self._triggers: dict[str, float] = {}  # trigger id -> when Slack issued it
        self._ts_seq = 0
        self._methods: dict[str, Callable[[Params, _Caller], Params]] = {
            "auth.test": self._auth_test,
            "auth.revoke": self._auth_revoke,
            "users.info": self._users_info,
            "conversations.open": self._conversations_open,
            "conversations.info": self._conversations_info,
            "chat.postMessage": self._post_message,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.update": self._update,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
            "apps.connections.open": lambda p, c: _err("not_allowed_token_type"),
        }
        home = self.add_workspace(team_id, bot_user_id=bot_user_id, team_name="Fake Team")
        home.bot_id = "B0BOT"
        self.users = home.users  # the home workspace's users; tests may edit them
        self._tokens[bot_token] = _Token(bot_token, "bot", home, bot_user_id, DEFAULT_SCOPE)
        home.bot_token = bot_token

    def forget(self) -> None:
        """Drop the requests, calls and messages recorded so far (not workspaces, tokens
        or response_urls: the fake's state goes on as before)."""
        with self._lock:
            super().forget()
            for kept in (self.calls, self.messages, self.ephemerals, self.updates, self.views):
                kept.clear()

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    @property
    def authorize_url(self) -> str:
        return self.url + "/oauth/v2/authorize"

    # -- test API: messages and interactions ---------------------------------------------------
    def add_user(
        self,
        user_id: str,
        *,
        is_admin: bool = False,
        is_owner: bool = False,
        name: str | None = None,
        deleted: bool = False,
        is_primary_owner: bool = False,
        is_restricted: bool = False,
        team_id: str | None = None,  # default: the home workspace
    ) -> dict[str, Any]:
        name = name or user_id.lower()
        real_name = name.replace(".", " ").title()
        is_owner = is_owner or is_primary_owner
        workspace = self._workspace(team_id or self.team_id)
        user = {
            "id": user_id,
            "team_id": workspace.team_id,
            "name": name,
            "deleted": deleted,
            "real_name": real_name,
            "tz": "Europe/London",
            "is_admin": is_admin or is_owner,  # Slack reports owners as admins too
            "is_owner": is_owner,
            "is_primary_owner": is_primary_owner,
            "is_restricted": is_restricted,
            "is_ultra_restricted": False,
            "is_bot": False,
            "is_app_user": False,
            "updated": int(time.time()),
            "profile": {"real_name": real_name, "display_name": name},
        }
        with self._lock:
            workspace.users[user_id] = user
        return user

    def rate_limit_next(self, method: str, retry_after: int = 1, count: int = 1) -> None:
        reply = json_reply(429, _err("ratelimited"), {"Retry-After": str(retry_after)})
        self._inject(lambda m: m == method, reply, count)

    def fail_next(self, method: str, error: str, count: int = 1) -> None:
        self._inject(lambda m: m == method, json_reply(200, _err(error)), count)

    def error_page_next(
        self, method: str, status: int = 502, content_type: str = "text/html", count: int = 1
    ) -> None:
        """An error page instead of JSON, as a proxy or load balancer in front of Slack
        answers when Slack's edge fails (Slack's own errors are JSON; this is not Slack)."""
        page = Reply(
            status, b"<html><body>Bad Gateway</body></html>", {"Content-Type": content_type}
        )
        self._inject(lambda m: m == method, page, count)

    def drop_next(self, method: str, count: int = 1) -> None:
        """Close the connection without answering, as a network failure would."""
        self._inject(lambda m: m == method, Reply(0), count)

    def calls_to(self, method: str) -> list[Params]:
        with self._lock:
            return [c.params for c in self.calls if c.method == method]

    def messages_to(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["channel"] == channel]

    def messages_from(self, team_id: str) -> list[dict[str, Any]]:
        """The messages posted with a token of that workspace (or org, for an org token)."""
        with self._lock:
            return [m for m in self.messages if m["_team"] == team_id]

    def im_channel(self, user_id: str) -> str | None:
        with self._lock:
            return self._ims.get(user_id)

    def dms_to(self, user_id: str) -> list[dict[str, Any]]:
        channel = self.im_channel(user_id)
        return self.messages_to(channel) if channel else []

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next((v["view"] for v in reversed(self.views) if v["user_id"] == user_id), None)

    def new_response_url(self, *, command: bool = False) -> str:
        rid = secrets.token_urlsafe(12)
        with self._lock:
            self._responses[rid] = _ResponseUrl(command, time.monotonic(), [])
        return f"{self.url}/response/{rid}"

    def responses(self, response_url: str) -> list[Any]:
        """Everything posted to a response_url, in order."""
        with self._lock:
            found = self._responses.get(response_url.rsplit("/response/", 1)[-1])
            return list(found.posts) if found else []

    def visible(self, response_url: str) -> list[Any]:
        """The messages a person sees from a response_url's posts, after replacements."""
        with self._lock:
            found = self._responses.get(response_url.rsplit("/response/", 1)[-1])
            if found is None:
                return []
            shown: list[Any] = []
            for post in found.posts:
                if not found.command and post.get("replace_original") and shown:
                    shown[-1] = post
                elif not found.command and post.get("delete_original") and shown:
                    shown.pop()
                else:
                    shown.append(post)
            return shown

    def issue_trigger(self) -> str:
        """A trigger_id, as Slack sends with an interaction; it lasts 3 seconds."""
        trigger = f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}"
        with self._lock:
            self._triggers[trigger] = time.monotonic()
        return trigger

    # -- test API: workspaces, installs and tokens ---------------------------------------------
    def add_workspace(
        self,
        team_id: str,
        *,
        enterprise_id: str | None = None,
        enterprise_name: str | None = None,
        org_wide: bool = False,
        bot_user_id: str | None = None,
        rotating: bool = False,
        team_name: str | None = None,
    ) -> Workspace:
        """A workspace nobody has installed the app in yet (see install and the OAuth flow)."""
        if org_wide and not enterprise_id:
            raise ValueError("an org-wide install needs an enterprise_id")
        with self._lock:
            if team_id in self.workspaces:
                raise ValueError(f"workspace {team_id} exists already")
            workspace = Workspace(
                team_id=team_id,
                team_name=team_name or f"Team {team_id}",
                bot_user_id=bot_user_id or f"U{team_id[1:]}BOT",
                bot_id=f"B{team_id[1:]}BOT",
                enterprise_id=enterprise_id,
                enterprise_name=(enterprise_name or f"Org {enterprise_id}")
                if enterprise_id
                else None,
                org_wide=org_wide,
                rotating=rotating,
            )
            self.workspaces[team_id] = workspace
        return workspace

    def approve_installs_as(self, team_id: str, user_id: str) -> None:
        """From now on, whoever opens /oauth/v2/authorize is this member and clicks Allow."""
        workspace = self._workspace(team_id)
        if user_id not in workspace.users:
            raise ValueError(f"{user_id} is no member of {team_id}: add_user(..., team_id=) first")
        with self._lock:
            self._installer, self._cancel_installs = (team_id, user_id), False

    def cancel_installs(self) -> None:
        """From now on (until approve_installs_as), the user clicks Cancel on Slack's page."""
        with self._lock:
            self._cancel_installs = True

    def install(
        self, team_id: str, user_id: str, *, scope: str = DEFAULT_SCOPE, user_scope: str = ""
    ) -> Params:
        """Install the app in that workspace without a browser: what oauth.v2.access answers."""
        workspace = self._workspace(team_id)
        with self._lock:
            return self._install(workspace, user_id, scope, user_scope)

    def expire_tokens(self, team_id: str) -> None:
        """Let 12 hours pass for that installation's access tokens (rotation must be on)."""
        workspace = self._workspace(team_id)
        if not workspace.rotating:
            raise ValueError(f"{team_id} does not rotate tokens: they never expire")
        with self._lock:
            for token in self._install_tokens(workspace):
                if token.kind != "refresh" and token.expires_at is not None:
                    token.expires_at = time.time() - 1

    def expire_codes(self) -> None:
        """Let ten minutes pass for every OAuth code handed out and not yet exchanged."""
        with self._lock:
            for code in self._codes.values():
                code.issued -= CODE_SECONDS + 1

    def uninstall(self, team_id: str) -> None:
        """Remove the app, as an admin would: every token of that installation is revoked."""
        workspace = self._workspace(team_id)
        with self._lock:
            for token in self._install_tokens(workspace):
                token.revoked = True
            for other in self.workspaces.values():
                if other.install_key == workspace.install_key:
                    other.bot_token = other.refresh_token = None

    def token_info(self, token: str) -> dict[str, Any] | None:
        """What the fake knows of a token: kind, team, user, revoked, expires_at."""
        with self._lock:
            found = self._tokens.get(token)
            if found is None:
                return None
            return {
                "kind": found.kind,
                "team_id": found.workspace.team_id,
                "user_id": found.user_id,
                "revoked": found.revoked,
                "expires_at": found.expires_at,
            }

    # -- test API: Events API envelopes (built here, signed and sent by the test) ---------------
    def app_uninstalled_event(self, team_id: str) -> Params:
        """The Events API body Slack sends when that installation is removed."""
        workspace = self._workspace(team_id)
        with self._lock:
            return self._envelope(workspace, {"type": "app_uninstalled"})

    def app_home_opened_event(self, team_id: str, user_id: str, tab: str = "home") -> Params:
        """The Events API body Slack sends when `user_id` opens the app's Home (or Messages)
        tab, with the view last published for them, if any."""
        workspace = self._workspace(team_id)
        with self._lock:
            event: Params = {
                "type": "app_home_opened",
                "user": user_id,
                "channel": self._open_im([user_id]),
                "tab": tab,
                "event_ts": f"{time.time():.6f}",
            }
            published = next(
                (v["view"] for v in reversed(self.views) if v["user_id"] == user_id), None
            )
            if published is not None and tab == "home":
                event["view"] = published
            return self._envelope(workspace, event)

    def tokens_revoked_event(
        self, team_id: str, *, oauth: list[str] | None = None, bot: list[str] | None = None
    ) -> Params:
        """The Events API body for revoked tokens; by default the user ids whose tokens of
        that installation are revoked now (`oauth`: user tokens, `bot`: bot tokens)."""
        workspace = self._workspace(team_id)
        with self._lock:
            revoked = [t for t in self._install_tokens(workspace) if t.revoked]
            if oauth is None:
                oauth = sorted({t.user_id for t in revoked if t.kind == "user"})
            if bot is None:
                bot = sorted({t.user_id for t in revoked if t.kind == "bot"})
            event = {"type": "tokens_revoked", "tokens": {"oauth": oauth, "bot": bot}}
            return self._envelope(workspace, event)

    def _envelope(self, workspace: Workspace, event: Params) -> Params:
        self._event_seq += 1
        envelope: Params = {
            "token": self.verification_token,
            "team_id": workspace.team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{self._event_seq:08d}{secrets.token_hex(1).upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": workspace.enterprise_id,
                    "team_id": None if workspace.org_wide else workspace.team_id,
                    "user_id": workspace.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": workspace.org_wide,
                }
            ],
            "is_ext_shared_channel": False,
        }
        if workspace.enterprise_id:
            envelope["enterprise_id"] = workspace.enterprise_id
        return envelope

    # -- routing -------------------------------------------------------------------------------
    def handle(self, req: Recorded) -> Reply:
        if req.path.startswith("/response/"):
            return self._response_url(req)
        if req.path == "/oauth/v2/authorize":
            return self._authorize(req)
        if not req.path.startswith("/api/"):
            return text_reply(404, "not_found")
        method = req.path.removeprefix("/api/")
        params: Params = {**req.query, **req.form}
        if req.headers.get("content-type", "").startswith("application/json"):
            body = req.json()
            params |= body if isinstance(body, dict) else {}
        if method == "oauth.v2.access":  # authenticated by the app's credentials, not a token
            self.calls.append(ApiCall(method, params, req.headers))
            injected = self._take_injected(method)
            if injected is not None:
                return injected
            return self._answer(self._oauth_v2_access(params, req.headers))
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else str(params.get("token") or "")
        found = self._tokens.get(token) if token else None
        caller = self._caller(found, params) if found is not None else None
        self.calls.append(ApiCall(method, params, req.headers, caller.team_id if caller else None))
        handler = self._methods.get(method)
        if handler is None:
            return self._answer(_err("unknown_method"))
        if not token:
            return self._answer(_err("not_authed"))
        if method == "apps.connections.open":
            # The one method that takes the app-level token instead of the bot token.
            if token != self.app_token:
                return self._answer(_err("invalid_auth"))
            return self._answer({"ok": True, "url": self.socket_mode_url})
        error = self._token_error(found)
        if error or caller is None:
            return self._answer(_err(error or "invalid_auth"))
        injected = self._take_injected(method)
        return injected if injected is not None else self._answer(handler(params, caller))

    def _answer(self, payload: Params) -> Reply:
        return json_reply(200, payload)  # Slack answers errors with HTTP 200 too

    def _response_url(self, req: Recorded) -> Reply:
        found = self._responses.get(req.path.removeprefix("/response/"))
        if found is None or time.monotonic() - found.created > RESPONSE_URL_SECONDS:
            return text_reply(404, "invalid_url")
        if len(found.posts) >= RESPONSE_URL_USES:
            return text_reply(404, "used_url")
        try:
            post = req.json()
        except ValueError:
            return text_reply(400, "invalid_payload")
        if not isinstance(post, dict):
            return text_reply(400, "invalid_payload")
        _, blocks_error = _blocks(post.get("blocks"))
        if blocks_error:
            return text_reply(400, blocks_error)
        found.posts.append(post)
        return text_reply(200, "ok")

    # -- tokens --------------------------------------------------------------------------------
    def _workspace(self, team_id: str) -> Workspace:
        with self._lock:
            found = self.workspaces.get(team_id)
        if found is None:
            raise KeyError(f"no workspace {team_id}: add_workspace() first")
        return found

    def _install_tokens(self, workspace: Workspace) -> list[_Token]:
        key = workspace.install_key
        return [t for t in self._tokens.values() if t.workspace.install_key == key]

    def _mint(
        self, kind: str, workspace: Workspace, user_id: str, scope: str, refreshes: str = ""
    ) -> _Token:
        self._token_seq += 1
        serial = f"{secrets.randbelow(10**12):012d}-{self._token_seq:013d}"
        prefix = {"bot": "xoxb", "user": "xoxp"}.get(kind, "")
        if kind == "refresh":
            value = f"xoxe-1-{secrets.token_hex(40)}"
        elif workspace.rotating:
            value = f"xoxe.{prefix}-1-{secrets.token_hex(40)}"
        else:
            value = f"{prefix}-{serial}-{secrets.token_hex(12)}"
        expires = None
        if workspace.rotating and kind != "refresh":
            expires = time.time() + self.token_lifetime
        token = _Token(value, kind, workspace, user_id, scope, refreshes, expires)
        self._tokens[value] = token
        return token

    @staticmethod
    def _token_error(token: _Token | None) -> str | None:
        if token is None or token.kind == "refresh":
            return "invalid_auth"
        if token.revoked:
            return "token_revoked"
        if token.expires_at is not None and time.time() >= token.expires_at:
            return "token_expired"
        return None

    def _caller(self, token: _Token, params: Params) -> _Caller:
        home = token.workspace
        if not home.org_wide:
            return _Caller(token, home, home.team_id, home.users)
        org = [w for w in self.workspaces.values() if w.enterprise_id == home.enterprise_id]
        users = {uid: u for w in org for uid, u in w.users.items()}
        named = self.workspaces.get(str(params.get("team_id") or ""))
        if named is not None and named.enterprise_id == home.enterprise_id:
            return _Caller(token, named, named.team_id, users)
        return _Caller(token, home, str(home.enterprise_id), users)

    # -- OAuth v2 ------------------------------------------------------------------------------
    def _authorize(self, req: Recorded) -> Reply:
        query = dict(req.query)
        self.authorize_requests.append(query)
        if query.get("client_id") != self.client_id:
            return text_reply(400, "Invalid client_id parameter")  # Slack's page, no redirect
        target = query.get("redirect_uri") or (self.redirect_uris[:1] or [""])[0]
        if not target or (self.redirect_uris and target not in self.redirect_uris):
            return text_reply(
                400, f"redirect_uri did not match any configured URIs. Passed URI: {target}"
            )
        state = query.get("state")
        if self._cancel_installs:
            return redirect_reply(add_query(target, {"error": "access_denied", "state": state}))
        if self._installer is None:
            self.errors.append("authorize: nobody approves installs; call approve_installs_as()")
            return text_reply(409, self.errors[-1])
        team_id, user_id = self._installer
        code = f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**13)}.{secrets.token_hex(32)}"
        self._codes[code] = _Code(
            self.workspaces[team_id],
            user_id,
            query.get("redirect_uri"),
            query.get("scope", ""),
            query.get("user_scope", ""),
            time.monotonic(),
        )
        return redirect_reply(add_query(target, {"code": code, "state": state}))

    def _oauth_v2_access(self, params: Params, headers: dict[str, str]) -> Params:
        client_id, client_secret = _client_credentials(params, headers)
        if client_id != self.client_id:
            return _err("invalid_client_id")
        if not secrets.compare_digest(client_secret, self.client_secret):
            return _err("bad_client_secret")
        grant_type = params.get("grant_type") or "authorization_code"
        if grant_type == "refresh_token":
            return self._refresh(str(params.get("refresh_token") or ""))
        if grant_type != "authorization_code":
            return _err("invalid_grant_type")
        value = str(params.get("code") or "")
        code = self._codes.get(value)
        if code is None or time.monotonic() - code.issued > CODE_SECONDS:
            return _err("invalid_code")
        sent = params.get("redirect_uri")
        if code.redirect_uri is not None and sent != code.redirect_uri:
            return _err("bad_redirect_uri")
        if code.redirect_uri is None and sent is not None and sent not in self.redirect_uris[:1]:
            return _err("bad_redirect_uri")
        del self._codes[value]  # good for one exchange
        return self._install(code.workspace, code.user_id, code.scope, code.user_scope)

    def _install(self, workspace: Workspace, user_id: str, scope: str, user_scope: str) -> Params:
        current = self._tokens.get(workspace.bot_token or "")
        if workspace.rotating or current is None or self._token_error(current):
            # Assumed: a reinstall without rotation hands back the same live bot token.
            bot = self._mint("bot", workspace, workspace.bot_user_id, scope)
            workspace.bot_token = bot.value
            if workspace.rotating:
                refresh = self._mint("refresh", workspace, bot.user_id, scope, "bot")
                workspace.refresh_token = refresh.value
        body: Params = {
            "ok": True,
            "access_token": workspace.bot_token,
            "token_type": "bot",
            "scope": scope,
            "bot_user_id": workspace.bot_user_id,
            "app_id": self.app_id,
            **self._team_fields(workspace),
            "authed_user": {"id": user_id},
        }
        if workspace.rotating:
            body |= {"expires_in": self.token_lifetime, "refresh_token": workspace.refresh_token}
        if user_scope:
            user = self._mint("user", workspace, user_id, user_scope)
            authed: Params = {"id": user_id, "scope": user_scope, "access_token": user.value}
            if workspace.rotating:
                refresh = self._mint("refresh", workspace, user_id, user_scope, "user")
                authed |= {"expires_in": self.token_lifetime, "refresh_token": refresh.value}
            body["authed_user"] = {**authed, "token_type": "user"}
        return body

    def _team_fields(self, workspace: Workspace) -> Params:
        enterprise = None
        if workspace.enterprise_id:
            enterprise = {"id": workspace.enterprise_id, "name": workspace.enterprise_name}
        team = (
            None if workspace.org_wide else {"id": workspace.team_id, "name": workspace.team_name}
        )
        return {"team": team, "enterprise": enterprise, "is_enterprise_install": workspace.org_wide}

    def _refresh(self, value: str) -> Params:
        old = self._tokens.get(value)
        if old is None or old.kind != "refresh" or old.revoked:
            return _err("invalid_refresh_token")
        # "The refresh token is then revoked" (using-token-rotation). Assumed: the previous
        # access token lives on until its own expiry; the docs revoke only the refresh token.
        old.revoked = True
        workspace = old.workspace
        access = self._mint(old.refreshes, workspace, old.user_id, old.scope)
        refresh = self._mint("refresh", workspace, old.user_id, old.scope, old.refreshes)
        body: Params = {
            "ok": True,
            "app_id": self.app_id,
            "access_token": access.value,
            "token_type": old.refreshes,
            "scope": old.scope,
            "expires_in": self.token_lifetime,
            "refresh_token": refresh.value,
            **self._team_fields(workspace),
        }
        if old.refreshes == "bot":
            body["bot_user_id"] = workspace.bot_user_id
            workspace.bot_token, workspace.refresh_token = access.value, refresh.value
        return body

    # -- Web API methods -----------------------------------------------------------------------
    def _next_ts(self) -> str:
        self._ts_seq += 1
        return f"{int(time.time())}.{self._ts_seq:06d}"

    def _channel_error(self, channel: str) -> str | None:
        if not channel:
            return "channel_not_found"
        if channel in self.archived:
            return "is_archived"
        if channel in self.not_in_channel:
            return "not_in_channel"
        return None

    def _auth_test(self, p: Params, caller: _Caller) -> Params:
        token, home = caller.token, caller.token.workspace
        user = home.users.get(token.user_id, {}).get("name") if token.kind == "user" else None
        answer: Params = {
            "ok": True,
            "url": home.url,
            "team": home.team_name,
            "user": user or (home.bot_name if token.kind == "bot" else token.user_id.lower()),
            "team_id": home.team_id,
            "user_id": token.user_id,
            "is_enterprise_install": home.org_wide,
        }
        if token.kind == "bot":
            answer["bot_id"] = home.bot_id
        if home.enterprise_id:
            answer["enterprise_id"] = home.enterprise_id
        if home.org_wide:  # unverified: an org token names its organization as the team
            answer |= {"team": home.enterprise_name, "team_id": home.enterprise_id}
        if token.expires_at is not None:
            answer["expires_in"] = max(0, int(token.expires_at - time.time()))
        return answer

    def _auth_revoke(self, p: Params, caller: _Caller) -> Params:
        if str(p.get("test") or "").lower() in ("1", "true"):
            return {"ok": True, "revoked": False}
        caller.token.revoked = True
        return {"ok": True, "revoked": True}

    def _users_info(self, p: Params, caller: _Caller) -> Params:
        user = caller.users.get(str(p.get("user", "")))
        return {"ok": True, "user": user} if user else _err("user_not_found")

    def _open_im(self, user_ids: list[str]) -> str:
        key = ",".join(sorted(user_ids))
        if key not in self._ims:
            prefix = "D" if len(user_ids) == 1 else "G"
            self._ims[key] = f"{prefix}{len(self._ims) + 1:08d}"
        return self._ims[key]

    def _conversations_open(self, p: Params, caller: _Caller) -> Params:
        users = p.get("users") or ""
        ids = users if isinstance(users, list) else [u for u in str(users).split(",") if u]
        if not ids:
            return _err("users_list_not_supplied")
        for uid in ids:
            if uid not in caller.users:
                return _err("user_not_found")
            if caller.users[uid]["deleted"]:
                return _err("user_disabled")
        return {"ok": True, "channel": {"id": self._open_im(ids)}}

    def _conversations_info(self, p: Params, caller: _Caller) -> Params:
        channel = str(p.get("channel") or "")
        if not channel or channel in self.not_in_channel:
            return _err("channel_not_found")
        if "channels:read" not in caller.token.scope.split(","):
            return {
                **_err("missing_scope"),
                "needed": "channels:read",
                "provided": caller.token.scope,
            }
        info = {"id": channel, "name": channel.lower(), "is_channel": True, "is_group": False}
        info |= {"is_im": False, "is_mpim": False, "is_private": False, "is_member": True}
        return {"ok": True, "channel": {**info, "is_archived": channel in self.archived}}

    def _post_message(self, p: Params, caller: _Caller) -> Params:
        channel = str(p.get("channel") or "")
        if channel[:1] in ("U", "W"):  # posting to a user id lands in their DM
            if channel not in caller.users:
                return _err("channel_not_found")
            channel = self._open_im([channel])
        error = self._channel_error(channel)
        blocks, blocks_error = _blocks(p.get("blocks"))
        error = error or blocks_error
        text = str(p.get("text") or "")
        if not error and not (text or blocks or p.get("attachments")):
            error = "no_text"
        if error:
            return _err(error)
        ts = self._next_ts()
        self.messages.append(
            {
                "channel": channel,
                "text": text,
                "blocks": blocks,
                "ts": ts,
                "thread_ts": p.get("thread_ts"),
                "_team": caller.team_id,
            }
        )
        message = {
            "type": "message",
            "text": text,
            "user": caller.token.user_id,
            "team": caller.workspace.team_id,
            "ts": ts,
            "blocks": blocks,
        }
        if caller.token.kind == "bot":
            message["bot_id"] = caller.token.workspace.bot_id
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _post_ephemeral(self, p: Params, caller: _Caller) -> Params:
        channel, user = str(p.get("channel") or ""), str(p.get("user") or "")
        blocks, blocks_error = _blocks(p.get("blocks"))
        text = str(p.get("text") or "")
        error = self._channel_error(channel) or (
            "user_not_found" if user not in caller.users else None
        )
        error = error or blocks_error or (None if text or blocks else "no_text")
        if error:
            return _err(error)
        ts = self._next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": text,
                "blocks": blocks,
                "message_ts": ts,
                "_team": caller.team_id,
            }
        )
        return {"ok": True, "message_ts": ts}

    def _update(self, p: Params, caller: _Caller) -> Params:
        channel, ts = str(p.get("channel") or ""), str(p.get("ts") or "")
        target = next((m for m in self.messages if (m["channel"], m["ts"]) == (channel, ts)), None)
        if target is None:  # also true for ephemerals, which chat.update cannot touch
            return _err("message_not_found")
        blocks, blocks_error = _blocks(p.get("blocks"))
        text = str(p.get("text") or "")
        if blocks_error or not (text or blocks):
            return _err(blocks_error or "no_text")
        target.update(text=text, blocks=blocks)
        self.updates.append(
            {"channel": channel, "ts": ts, "text": text, "blocks": blocks, "_team": caller.team_id}
        )
        message = {"type": "message", "text": text, "user": caller.token.user_id, "blocks": blocks}
        return {"ok": True, "channel": channel, "ts": ts, "text": text, "message": message}

    @staticmethod
    def _view(p: Params) -> Any:
        """The `view` argument, sent as a JSON string by slack_sdk."""
        view = p.get("view")
        if isinstance(view, str):
            try:
                return json.loads(view)
            except ValueError:
                return None
        return view

    def _views_open(self, p: Params, caller: _Caller) -> Params:
        view = self._view(p)
        trigger_id = str(p.get("trigger_id") or "")
        issued = self._triggers.pop(trigger_id, None)  # good for one views.open
        if issued is None:
            return _err("invalid_trigger_id")
        if time.monotonic() - issued > TRIGGER_SECONDS:
            return _err("expired_trigger_id")
        if not isinstance(view, dict) or view.get("type") != "modal":
            return _err("invalid_arguments")
        if _blocks(view.get("blocks"), MAX_VIEW_BLOCKS)[1]:
            return _err("invalid_blocks")
        view_id = f"V{len(self.opened_views) + 1:08d}"
        self.opened_views.append(
            {"trigger_id": trigger_id, "view": view, "id": view_id, "_team": caller.team_id}
        )
        return {"ok": True, "view": {**view, "id": view_id, "team_id": caller.workspace.team_id}}

    def _views_publish(self, p: Params, caller: _Caller) -> Params:
        view = self._view(p)
        user_id = str(p.get("user_id") or "")
        if not isinstance(view, dict) or not user_id or view.get("type") != "home":
            return _err("invalid_arguments")
        blocks, problem = _blocks(view.get("blocks"), MAX_VIEW_BLOCKS)
        if problem or _duplicate_ids(blocks):
            return _err("invalid_arguments")
        self.views.append({"user_id": user_id, "view": view, "_team": caller.team_id})
        published = {
            **view,
            "id": f"V{len(self.views):08d}",
            "team_id": caller.workspace.team_id,
            "app_id": self.app_id,
            "bot_id": caller.token.workspace.bot_id,
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
        }
        return {"ok": True, "view": published}
