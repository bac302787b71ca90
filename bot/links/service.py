"""What is left once the lifecycles are apart: reading accounts and unlinking them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlmodel import Session

from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import (
    AccountView,
    AuditEntry,
    AuditKind,
    DatabaseDown,
    LinkChanged,
    LinkStatus,
    Notifier,
    NotLinked,
    SalesforceLoginFailed,
)
from bot.links.common import Hosts, account_view, audit_entry
from bot.links.errors import Store, salesforce
from bot.salesforce import SalesforceClient
from storage import repository as repo
from storage.models import VccAccount

log = logging.getLogger(__name__)

# Home tabs are published again on a change for those who opened them lately, at most
# this many per workspace (each is one views.publish, at Slack's ~100 a minute).
HOME_VIEWERS_KEPT = timedelta(days=30)
HOME_VIEWERS_MOST = 50


@dataclass(frozen=True)
class Viewer:
    team_id: str
    user_id: str
    enterprise_id: str | None
    page: int = 0


class LinkService:
    def __init__(
        self,
        *,
        store: Store,
        cipher: TokenCipher,
        salesforce: SalesforceClient,
        hosts: Hosts,
        notifier: Notifier,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._sf = salesforce
        self._hosts = hosts
        self._notifier = notifier
        self._now = clock

    async def account(self, team_id: str, account_id: str) -> AccountView:
        """The account, and how many VCC accounts its API user serves (for relink warnings)."""

        def read(session: Session) -> tuple[VccAccount | None, int]:
            row = repo.get_account(session, team_id=team_id, account_id=account_id)
            links = 0
            if row is not None and row.org_id and row.sf_user_id:
                links = repo.count_api_user_links(
                    session, org_id=row.org_id, sf_user_id=row.sf_user_id
                )
            return row, links

        row, links = await self._store.read(read)
        return account_view(row, team_id=team_id, account_id=account_id, api_user_links=links)

    async def history(self, team_id: str, account_id: str, limit: int = 10) -> list[AuditEntry]:
        rows = await self._store.read(
            partial(repo.recent_events, team_id=team_id, account_id=account_id, limit=limit)
        )
        return [audit_entry(row) for row in rows]

    async def record_undelivered(self, account: AccountView, kind: str, error: str) -> None:
        """A notice Slack would not take, kept in the account's audit trail."""
        record = partial(
            repo.add_event,
            team_id=account.team_id,
            account_id=account.account_id,
            event=AuditKind.NOTICE_FAILED,
            actor="slack",
            now=self._now(),
            detail=f"{kind} notice to {account.notify_channel or 'no channel'}: {error}",
        )
        try:
            await self._store.write(record)
        except DatabaseDown:
            log.warning("could not record an undelivered %s notice", kind)

    async def workspace_left(
        self, team_id: str | None, enterprise_id: str | None, by: str = "slack"
    ) -> int:
        """The app was uninstalled (or its bot token revoked): outstanding login links of
        the workspace (of the org, for an org-wide install) stop working. Links stay, so
        the contact centre keeps working; notices wait for the app to be installed again
        (the notifier finds no token). Returns how many login links were withdrawn."""
        now = self._now()
        withdrawn = await self._store.write(
            partial(
                repo.withdraw_workspace_attempts,
                team_id=team_id,
                enterprise_id=enterprise_id,
                now=now,
            )
        )
        log.info(
            "app left %s %s (%s): %d login link(s) withdrawn; links kept, notices paused",
            "team" if team_id else "enterprise",
            team_id or enterprise_id,
            by,
            withdrawn,
        )
        return withdrawn

    async def accounts(self, team_id: str | None = None) -> list[AccountView]:
        """Every account of a workspace (all workspaces without one): for operators."""
        rows = await self._store.read(partial(repo.workspace_accounts, team_id=team_id))
        return [account_view(r, team_id=r.team_id, account_id=r.account_id) for r in rows]

    async def set_channel(
        self,
        team_id: str,
        account_id: str,
        channel_id: str,
        user_id: str,
        enterprise_id: str | None = None,
    ) -> AccountView:
        """Make `channel_id` the account's notification channel, audited."""
        now = self._now()

        def save(session: Session) -> VccAccount:
            row, before = repo.set_notify_channel(
                session,
                team_id=team_id,
                account_id=account_id,
                channel_id=channel_id,
                now=now,
                enterprise_id=enterprise_id,
            )
            repo.add_event(
                session,
                team_id=team_id,
                account_id=account_id,
                event=AuditKind.CHANNEL_SET,
                actor=user_id,
                now=now,
                detail=f"from {before or 'none'} to {channel_id}",
            )
            return row

        row = await self._store.write(save)
        return account_view(row, team_id=team_id, account_id=account_id)

    async def viewed_home(
        self, team_id: str, user_id: str, enterprise_id: str | None, page: int | None = None
    ) -> int:
        """Someone opened the Home tab (or turned to `page`): the page to show them."""
        return await self._store.write(
            partial(
                repo.note_home_viewer,
                team_id=team_id,
                user_id=user_id,
                enterprise_id=enterprise_id,
                now=self._now(),
                page=page,
            )
        )

    async def home_viewers(self, team_id: str) -> list[Viewer]:
        rows = await self._store.read(
            partial(
                repo.home_viewers,
                team_id=team_id,
                since=self._now() - HOME_VIEWERS_KEPT,
                limit=HOME_VIEWERS_MOST,
            )
        )
        return [Viewer(r.team_id, r.user_id, r.enterprise_id, r.page) for r in rows]

    async def unlink(self, team_id: str, account_id: str, user_id: str) -> AccountView:
        """Revoke at Salesforce, then forget the link and withdraw its login links.

        On a Salesforce outage nothing changes (SalesforceDown).
        """
        row = await self._store.read(
            partial(repo.get_account, team_id=team_id, account_id=account_id)
        )
        if row is None or row.status == LinkStatus.UNLINKED:
            raise NotLinked(account_id)
        stored = row.refresh_token_encrypted
        if stored is not None:
            await self._revoke(row, stored)
        now = self._now()

        def clear(session: Session) -> VccAccount:
            cleared = repo.mark_unlinked(
                session, team_id=team_id, account_id=account_id, expected_token=stored, now=now
            )
            # A login link sent before the unlink must not link the account again.
            repo.withdraw_login_attempts(session, team_id=team_id, account_id=account_id, now=now)
            repo.add_event(
                session,
                team_id=team_id,
                account_id=account_id,
                event=AuditKind.UNLINKED,
                actor=user_id,
                now=now,
                org_id=row.org_id,
                sf_username=row.sf_username,
            )
            return cleared

        try:
            cleared = await self._store.write(clear)
        except repo.LinkReplaced:
            raise LinkChanged() from None
        await self._notifier.unlinked(
            account_view(row, team_id=team_id, account_id=account_id), user_id
        )
        return account_view(cleared, team_id=team_id, account_id=account_id)

    async def _revoke(self, row: VccAccount, stored: str) -> None:
        host = self._hosts.login_host(row.environment, row.login_host)
        try:
            token = self._cipher.decrypt(stored)
        except UndecryptableToken:
            log.warning("unlinking a token no key decrypts; it cannot be revoked")
            return
        try:
            await salesforce(partial(self._sf.revoke, host, token))
        except SalesforceLoginFailed as refused:
            log.warning("Salesforce refused to revoke (%s); unlinking anyway", refused.error)
