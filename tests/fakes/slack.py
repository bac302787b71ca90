"""Fake Slack Web API (the handful of methods the bot uses) plus response_url endpoints.

Contract: what this fake claims about Slack, and where Slack says so.

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
- Posting in an archived channel is `is_archived`; in a private channel the bot is not in,
  `not_in_channel`; in an unknown one, `channel_not_found` (api.slack.com/methods/
  chat.postMessage#errors).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._server import FakeServer, Recorded, Reply, json_reply, text_reply

MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
RESPONSE_URL_USES = 5
RESPONSE_URL_SECONDS = 30 * 60
TRIGGER_SECONDS = 3.0

Params = dict[str, Any]


@dataclass(frozen=True)
class ApiCall:
    method: str  # Web API method name, e.g. "chat.postMessage"
    params: Params  # query, form and JSON body merged
    headers: dict[str, str]  # lower-cased names


def _err(error: str) -> Params:
    return {"ok": False, "error": error}


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


@dataclass
class _ResponseUrl:
    command: bool  # a slash command's: posts only add messages
    created: float
    posts: list[Any]


class FakeSlack(FakeServer):
    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",  # noqa: S107 - a fake's well-known token
        team_id: str = "T0001",
        bot_user_id: str = "U0BOT",
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.app_token = "xapp-1-A0VCC-test"
        self.socket_mode_url = ""  # what apps.connections.open hands out
        self.users: dict[str, dict[str, Any]] = {}  # users.info payloads; tests may edit them
        self.not_in_channel: set[str] = set()
        self.archived: set[str] = set()
        self.calls: list[ApiCall] = []
        self.messages: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.opened_views: list[dict[str, Any]] = []  # modals opened with views.open
        self._ims: dict[str, str] = {}  # sorted comma-joined user ids -> IM/MPIM channel id
        self._responses: dict[str, _ResponseUrl] = {}
        self._triggers: dict[str, float] = {}  # trigger id -> when Slack issued it
        self._ts_seq = 0
        self._methods: dict[str, Callable[[Params], Params]] = {
            "auth.test": self._auth_test,
            "users.info": self._users_info,
            "conversations.open": self._conversations_open,
            "chat.postMessage": self._post_message,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.update": self._update,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
            "apps.connections.open": lambda p: _err("not_allowed_token_type"),
        }

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    # -- test API ------------------------------------------------------------------------------
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
    ) -> dict[str, Any]:
        name = name or user_id.lower()
        real_name = name.replace(".", " ").title()
        is_owner = is_owner or is_primary_owner
        user = {
            "id": user_id,
            "team_id": self.team_id,
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
            self.users[user_id] = user
        return user

    def rate_limit_next(self, method: str, retry_after: int = 1, count: int = 1) -> None:
        reply = json_reply(429, _err("ratelimited"), {"Retry-After": str(retry_after)})
        self._inject(lambda m: m == method, reply, count)

    def fail_next(self, method: str, error: str, count: int = 1) -> None:
        self._inject(lambda m: m == method, json_reply(200, _err(error)), count)

    def drop_next(self, method: str, count: int = 1) -> None:
        """Close the connection without answering, as a network failure would."""
        self._inject(lambda m: m == method, Reply(0), count)

    def calls_to(self, method: str) -> list[Params]:
        with self._lock:
            return [c.params for c in self.calls if c.method == method]

    def messages_to(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["channel"] == channel]

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

    # -- routing -------------------------------------------------------------------------------
    def handle(self, req: Recorded) -> Reply:
        if req.path.startswith("/response/"):
            return self._response_url(req)
        if not req.path.startswith("/api/"):
            return text_reply(404, "not_found")
        method = req.path.removeprefix("/api/")
        params: Params = {**req.query, **req.form}
        if req.headers.get("content-type", "").startswith("application/json"):
            body = req.json()
            params |= body if isinstance(body, dict) else {}
        self.calls.append(ApiCall(method, params, req.headers))
        handler = self._methods.get(method)
        if handler is None:
            return self._answer(_err("unknown_method"))
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else str(params.get("token") or "")
        if not token:
            return self._answer(_err("not_authed"))
        if method == "apps.connections.open":
            # The one method that takes the app-level token instead of the bot token.
            if token != self.app_token:
                return self._answer(_err("invalid_auth"))
            return self._answer({"ok": True, "url": self.socket_mode_url})
        if token != self.bot_token:
            return self._answer(_err("invalid_auth"))
        injected = self._take_injected(method)
        return injected if injected is not None else self._answer(handler(params))

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

    def _auth_test(self, p: Params) -> Params:
        return {
            "ok": True,
            "url": "https://fake-team.slack.com/",
            "team": "Fake Team",
            "user": "vccbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": "B0BOT",
            "is_enterprise_install": False,
        }

    def _users_info(self, p: Params) -> Params:
        user = self.users.get(str(p.get("user", "")))
        return {"ok": True, "user": user} if user else _err("user_not_found")

    def _open_im(self, user_ids: list[str]) -> str:
        key = ",".join(sorted(user_ids))
        if key not in self._ims:
            prefix = "D" if len(user_ids) == 1 else "G"
            self._ims[key] = f"{prefix}{len(self._ims) + 1:08d}"
        return self._ims[key]

    def _conversations_open(self, p: Params) -> Params:
        users = p.get("users") or ""
        ids = users if isinstance(users, list) else [u for u in str(users).split(",") if u]
        if not ids:
            return _err("users_list_not_supplied")
        for uid in ids:
            if uid not in self.users:
                return _err("user_not_found")
            if self.users[uid]["deleted"]:
                return _err("user_disabled")
        return {"ok": True, "channel": {"id": self._open_im(ids)}}

    def _post_message(self, p: Params) -> Params:
        channel = str(p.get("channel") or "")
        if channel[:1] in ("U", "W"):  # posting to a user id lands in their DM
            if channel not in self.users:
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
            }
        )
        message = {
            "type": "message",
            "text": text,
            "user": self.bot_user_id,
            "bot_id": "B0BOT",
            "team": self.team_id,
            "ts": ts,
            "blocks": blocks,
        }
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _post_ephemeral(self, p: Params) -> Params:
        channel, user = str(p.get("channel") or ""), str(p.get("user") or "")
        blocks, blocks_error = _blocks(p.get("blocks"))
        text = str(p.get("text") or "")
        error = self._channel_error(channel) or (
            "user_not_found" if user not in self.users else None
        )
        error = error or blocks_error or (None if text or blocks else "no_text")
        if error:
            return _err(error)
        ts = self._next_ts()
        self.ephemerals.append(
            {"channel": channel, "user": user, "text": text, "blocks": blocks, "message_ts": ts}
        )
        return {"ok": True, "message_ts": ts}

    def _update(self, p: Params) -> Params:
        channel, ts = str(p.get("channel") or ""), str(p.get("ts") or "")
        target = next((m for m in self.messages if (m["channel"], m["ts"]) == (channel, ts)), None)
        if target is None:  # also true for ephemerals, which chat.update cannot touch
            return _err("message_not_found")
        blocks, blocks_error = _blocks(p.get("blocks"))
        text = str(p.get("text") or "")
        if blocks_error or not (text or blocks):
            return _err(blocks_error or "no_text")
        target.update(text=text, blocks=blocks)
        self.updates.append({"channel": channel, "ts": ts, "text": text, "blocks": blocks})
        message = {"type": "message", "text": text, "user": self.bot_user_id, "blocks": blocks}
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

    def _views_open(self, p: Params) -> Params:
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
        self.opened_views.append({"trigger_id": trigger_id, "view": view, "id": view_id})
        return {"ok": True, "view": {**view, "id": view_id, "team_id": self.team_id}}

    def _views_publish(self, p: Params) -> Params:
        view = self._view(p)
        user_id = str(p.get("user_id") or "")
        if not isinstance(view, dict) or not user_id:
            return _err("invalid_arguments")
        self.views.append({"user_id": user_id, "view": view})
        published = {
            **view,
            "id": f"V{len(self.views):08d}",
            "team_id": self.team_id,
            "app_id": "A0APP",
            "bot_id": "B0BOT",
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
        }
        return {"ok": True, "view": published}
