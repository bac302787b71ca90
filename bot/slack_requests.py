"""What a signed Slack request must look like before bolt sees it.

Slack signs whatever it sends, but a signed request can still be malformed (a replayed
body with a broken payload, a client bug, a fuzzer holding the secret): each is refused
with 400 here rather than failing inside bolt or a listener with a 500. Only the shapes
the bot handles are let through, so nothing reaches bolt that no listener answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot import ids

ACTIONS = frozenset(
    {
        ids.LINK_PRODUCTION,
        ids.LINK_SANDBOX,
        ids.LINK_CUSTOM,
        ids.RELINK,
        ids.CHECK_NOW,
        ids.LOGIN_OPEN,
        ids.LOGIN_AGAIN,
        ids.UNLINK_CONFIRM,
        ids.UNLINK_CANCEL,
    }
)
# Buttons of the Home tab: clicked in a view, with neither channel nor response_url.
HOME_ACTIONS = frozenset(
    {ids.HOME_LINK, ids.HOME_CHECK, ids.HOME_UNLINK, ids.HOME_PREVIOUS, ids.HOME_NEXT}
)
Id = Annotated[str, Field(min_length=1, max_length=64)]
Text = Annotated[str, Field(max_length=65_536)]  # the body limit bounds it anyway


class MalformedRequest(Exception):
    """A signed request that is not a shape the bot handles; answered 400."""


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Ref(_Shape):
    id: Id


class _Action(_Shape):
    action_id: Id
    value: Text | None = None

    @field_validator("action_id")
    @classmethod
    def _ours(cls, value: str) -> str:
        if value not in ACTIONS and value not in HOME_ACTIONS:
            raise ValueError("not an action of this app")
        return value


class _BlockActions(_Shape):
    type: Literal["block_actions"]
    user: _Ref
    team: _Ref | None = None
    channel: _Ref | None = None
    container: dict[str, Any] = Field(default_factory=dict)
    actions: list[_Action] = Field(min_length=1, max_length=1)
    response_url: Text | None = None
    trigger_id: Text | None = None

    @model_validator(mode="after")
    def _where(self) -> _BlockActions:
        user_team = (self.user.model_extra or {}).get("team_id")
        if self.team is None and not isinstance(user_team, str):
            raise ValueError("no workspace")
        if self.actions[0].action_id in HOME_ACTIONS:
            if self.container.get("type") != "view":
                raise ValueError("a Home tab button outside a view")
        elif self.channel is None and not isinstance(self.container.get("channel_id"), str):
            raise ValueError("no channel")
        return self


class _ViewState(_Shape):
    values: dict[str, dict[str, dict[str, Any]]]


class _View(_Shape):
    id: Id | None = None
    callback_id: Literal["vcc_custom_domain"]
    private_metadata: Text
    state: _ViewState

    @field_validator("private_metadata")
    @classmethod
    def _metadata(cls, value: str) -> str:
        try:
            meta = json.loads(value)
        except ValueError:
            raise ValueError("private_metadata is not JSON") from None
        if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), str) for k in ("account", "channel", "response_url")
        ):
            raise ValueError("private_metadata lacks account, channel or response_url")
        return value


class _ViewSubmission(_Shape):
    type: Literal["view_submission"]
    user: _Ref
    team: _Ref | None = None
    view: _View


class _Event(_Shape):
    type: Literal["app_uninstalled", "tokens_revoked", "app_home_opened"]
    tokens: dict[str, list[str]] | None = None
    user: Id | None = None  # app_home_opened: who opened the tab
    tab: Text | None = None

    @model_validator(mode="after")
    def _who(self) -> _Event:
        if self.type == "app_home_opened" and self.user is None:
            raise ValueError("app_home_opened without a user")
        return self


class _EventCallback(_Shape):
    """The events this app subscribes to (manifest.yml); bolt reads the envelope's ids."""

    type: Literal["event_callback"]
    team_id: str = Field(max_length=32)
    api_app_id: str = Field(max_length=32)
    event: _Event


class _Command(_Shape):
    command: Literal["/vcc"]
    team_id: Id
    user_id: Id
    channel_id: Id
    text: Text = ""
    response_url: Text
    trigger_id: Text = ""


def _payload(raw: str) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        raise MalformedRequest("payload is not JSON") from None
    kind = data.get("type") if isinstance(data, dict) else None
    shapes: dict[str, type[_Shape]] = {
        "block_actions": _BlockActions,
        "view_submission": _ViewSubmission,
    }
    model = shapes.get(str(kind))
    if model is None:
        raise MalformedRequest("not an interaction this app handles")
    try:
        model.model_validate(data)
    except ValidationError:
        raise MalformedRequest(f"a malformed {kind} payload") from None
    return str(kind)


@dataclass(frozen=True)
class Normalised:
    body: str  # as bolt should read it
    # Slack needs nothing in the HTTP answer but a 200: a command, a click, an event. (A
    # modal's submission may answer with errors; a URL verification with its challenge.)
    empty_ack: bool


def normalise(body: bytes, content_type: str) -> Normalised:
    """The body as bolt should read it; raises MalformedRequest for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("not UTF-8") from None
    if content_type.split(";")[0].strip() == "application/json":
        try:
            data = json.loads(text)
        except ValueError:
            raise MalformedRequest("not JSON") from None
        if isinstance(data, dict) and data.get("type") == "url_verification":
            return Normalised(text, empty_ack=False)
        try:
            _EventCallback.model_validate(data)
        except ValidationError:
            raise MalformedRequest("not an event this app subscribes to") from None
        return Normalised(text, empty_ack=True)
    fields = parse_qsl(text, keep_blank_values=True)
    form = dict(fields)
    if len(form) != len(fields):
        raise MalformedRequest("a field given twice")
    if "payload" in form:
        if len(form) != 1:
            raise MalformedRequest("a payload with other fields")
        kind = _payload(form["payload"])
        return Normalised(text, empty_ack=kind == "block_actions")
    try:
        _Command.model_validate(form)
    except ValidationError:
        raise MalformedRequest("not a /vcc command") from None
    # bolt takes any body containing the word "payload" for an interaction: re-encode
    # the command so that a text like "status payload-uk" stays a command.
    return Normalised(urlencode(form).replace("payload", "p%61yload"), empty_ack=True)
