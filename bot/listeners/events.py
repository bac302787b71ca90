"""The app leaving a workspace: `app_uninstalled` and `tokens_revoked`.

The installation is forgotten (its token is dead anyway) and the workspace's outstanding
login links are withdrawn; its links stay, so the contact centre keeps working, and their
notices wait until the app is installed again. Slack may deliver an event more than
once: a second delivery finds nothing left to delete or withdraw.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from bot.links import LinkService
from bot.slack_install import EncryptedInstallationStore


def _scope(context: AsyncBoltContext) -> tuple[str | None, str | None]:
    """(enterprise, team) as the installation was stored: an org-wide one has no team."""
    team = None if context.is_enterprise_install else context.team_id
    return context.enterprise_id, team


async def app_uninstalled(
    context: AsyncBoltContext,
    links: LinkService,
    installations: EncryptedInstallationStore | None,
) -> None:
    enterprise_id, team_id = _scope(context)
    if installations is not None:
        await installations.async_delete_all(enterprise_id=enterprise_id, team_id=team_id)
    await links.workspace_left(team_id, enterprise_id, by="app_uninstalled")


async def tokens_revoked(
    event: dict[str, Any],
    context: AsyncBoltContext,
    links: LinkService,
    installations: EncryptedInstallationStore | None,
) -> None:
    enterprise_id, team_id = _scope(context)
    tokens = event.get("tokens") or {}
    if installations is not None:
        for user_id in tokens.get("oauth") or []:
            await installations.async_delete_installation(
                enterprise_id=enterprise_id, team_id=team_id, user_id=user_id
            )
    if tokens.get("bot"):
        # Without its bot token the app can do nothing in the workspace: as an uninstall.
        if installations is not None:
            await installations.async_delete_bot(enterprise_id=enterprise_id, team_id=team_id)
        await links.workspace_left(team_id, enterprise_id, by="tokens_revoked")


def register(app: AsyncApp) -> None:
    app.event("app_uninstalled")(app_uninstalled)
    app.event("tokens_revoked")(tokens_revoked)
