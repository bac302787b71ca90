"""The bot's Home tab: every VCC account of the workspace, published per person.

A Home tab is one view per user (views.publish). It is published when someone opens it
(app_home_opened), after a click on it, and again for everyone who opened it lately when a
link changes (the notifier says so). Refreshes of one workspace are gathered: a burst of
changes (a mass revocation) publishes each tab once.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.admins import AdminCheckFailed, AdminPolicy
from bot.domain import AccountView
from bot.links import LinkService
from bot.slack_errors import slack_error
from bot.slack_install import SlackClients

log = logging.getLogger(__name__)

# How long a change waits for others of its workspace before the tabs are published.
GATHER_SECONDS = 1.0


class HomeTab:
    def __init__(
        self,
        clients: SlackClients,
        links: LinkService,
        admins: AdminPolicy,
        *,
        gather: float = GATHER_SECONDS,
    ) -> None:
        self._clients = clients
        self._links = links
        self._admins = admins
        self._gather = gather
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def publish(
        self,
        team_id: str,
        enterprise_id: str | None,
        user_id: str,
        *,
        page: int = 0,
        notice: str | None = None,
        client: AsyncWebClient | None = None,
        views: list[AccountView] | None = None,
    ) -> None:
        """Publish `user_id`'s tab: buttons for admins, read-only for everyone else
        (`views`: the workspace's accounts, when the caller has read them already)."""
        client = client or await self._clients.client_for(team_id, enterprise_id)
        if client is None:  # uninstalled meanwhile: there is no tab to publish
            return
        if views is None:
            views = await self._links.accounts(team_id)
        try:
            admin = await self._admins.bound(client).is_admin(team_id, user_id)
        except AdminCheckFailed as exc:
            # Read-only when Slack cannot say; every click checks again anyway.
            admin = False
            notice = notice or f":warning: I could not confirm that you are an admin ({exc})."
        view = blocks.home_view(views, admin=admin, page=page, notice=notice)
        await client.views_publish(user_id=user_id, view=view)

    def changed(self, team_id: str) -> None:
        """A link of the workspace changed: publish its viewers' tabs again, soon."""
        if team_id not in self._refreshing:
            self._refreshing[team_id] = asyncio.create_task(self._refresh(team_id))

    async def _refresh(self, team_id: str) -> None:
        try:
            await asyncio.sleep(self._gather)
            del self._refreshing[team_id]  # a change from now on refreshes again
            viewers = await self._links.home_viewers(team_id)
            views = await self._links.accounts(team_id) if viewers else []
            for viewer in viewers:  # one read of the accounts serves every tab
                try:
                    await self.publish(
                        viewer.team_id,
                        viewer.enterprise_id,
                        viewer.user_id,
                        page=viewer.page,
                        views=views,
                    )
                except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                    error = slack_error(exc) if isinstance(exc, SlackApiError) else repr(exc)
                    log.warning("could not refresh a Home tab of %s: %s", team_id, error)
        except Exception:  # a refresh must never take its task down silently
            log.exception("could not refresh the Home tabs of %s", team_id)
        finally:
            if self._refreshing.get(team_id) is asyncio.current_task():
                del self._refreshing[team_id]

    async def aclose(self, within: float = 5.0) -> None:
        """Publish what is waiting (bounded), as the notifier sends its notices."""
        self._gather = 0.0
        tasks = list(self._refreshing.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=within)
            for task in late:
                task.cancel()
