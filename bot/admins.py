"""Who may link and unlink: workspace admins and owners, plus VCC_ADMIN_USERS."""

from __future__ import annotations

import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_errors import slack_error

ADMIN_CACHE_SECONDS = 60.0


class AdminCheckFailed(Exception):
    """Slack could not tell whether the user is an admin; refuse, and say why."""


class AdminPolicy:
    """Slack has no per-command permissions, so every command and click asks here.

    users.info answers are cached briefly (a per-process cache only saves calls; a
    replica without the entry simply asks Slack again). Each request asks with its own
    workspace's client (`bound`): a user id means nothing in another workspace.
    """

    def __init__(
        self,
        allowed_users: frozenset[str],
        *,
        ttl: float = ADMIN_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allowed = allowed_users
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}

    def known(self, team_id: str, user_id: str) -> bool | None:
        """The answer if it is at hand (no call to Slack), else None."""
        if user_id in self._allowed:
            return True
        cached = self._cache.get((team_id, user_id))
        return cached[1] if cached and cached[0] > self._clock() else None

    def bound(self, client: AsyncWebClient) -> BoundAdminPolicy:
        return BoundAdminPolicy(self, client)

    async def is_admin(self, client: AsyncWebClient, team_id: str, user_id: str) -> bool:
        if user_id in self._allowed:
            return True
        key = (team_id, user_id)
        cached = self._cache.get(key)
        now = self._clock()
        if cached and cached[0] > now:
            return cached[1]
        try:
            response = await client.users_info(user=user_id)
        except SlackApiError as exc:
            raise AdminCheckFailed(slack_error(exc)) from None
        user = response.get("user") or {}
        allowed = bool(user.get("is_admin") or user.get("is_owner")) and not user.get("deleted")
        self._cache[key] = (now + self._ttl, allowed)
        return allowed


class BoundAdminPolicy:
    """The policy as one request sees it: asking with that request's workspace client."""

    def __init__(self, policy: AdminPolicy, client: AsyncWebClient) -> None:
        self._policy = policy
        self._client = client

    def known(self, team_id: str, user_id: str) -> bool | None:
        return self._policy.known(team_id, user_id)

    async def is_admin(self, team_id: str, user_id: str) -> bool:
        return await self._policy.is_admin(self._client, team_id, user_id)
