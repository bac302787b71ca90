"""What the lifecycles share: login hosts, rows as views, and work that outlives a request."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Coroutine
from typing import Any

from bot.domain import AccountView, AuditEntry, Environment, Health, LinkStatus
from storage.models import AuditEvent, VccAccount

log = logging.getLogger(__name__)

MONITOR = "monitor"  # the actor of checks nobody asked for


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Hosts:
    """Which Salesforce login host serves an environment (or the org's own My Domain)."""

    def __init__(self, login_hosts: dict[Environment, str]) -> None:
        self._hosts = login_hosts

    def login_host(self, environment: str | None, custom: str | None = None) -> str:
        if custom:
            return custom
        return self._hosts[Environment(environment or Environment.PRODUCTION)]


def account_view(
    row: VccAccount | None, *, team_id: str, account_id: str, api_user_links: int = 0
) -> AccountView:
    if row is None:
        return AccountView(team_id=team_id, account_id=account_id, status=LinkStatus.UNLINKED)
    return AccountView(
        team_id=row.team_id,
        enterprise_id=row.enterprise_id,
        account_id=row.account_id,
        status=LinkStatus(row.status),
        environment=Environment(row.environment) if row.environment else None,
        org_id=row.org_id,
        sf_user_id=row.sf_user_id,
        sf_username=row.sf_username,
        instance_url=row.instance_url,
        linked_by=row.linked_by,
        linked_at=row.linked_at,
        notify_channel=row.notify_channel,
        warnings=json.loads(row.permission_warnings or "[]"),
        health=Health(row.health),
        health_reason=row.health_reason,
        health_checked_at=row.health_checked_at,
        api_user_links=api_user_links,
    )


def audit_entry(event: AuditEvent) -> AuditEntry:
    return AuditEntry(
        event=event.event,
        actor=event.actor,
        at=event.created_at,
        team_id=event.team_id,
        account_id=event.account_id,
        org_id=event.org_id,
        sf_username=event.sf_username,
        detail=event.detail,
    )


class Background:
    """Work that outlives the request that started it (re-checks, late audit records).

    Tasks are kept here so they are not garbage-collected mid-way, and `aclose` gives
    them a bounded time to finish at shutdown.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    async def idle(self, within: float) -> bool:
        """Wait until no work is under way; False if some still is after `within` seconds."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        return not pending

    async def aclose(self, within: float = 10.0) -> None:
        if not await self.idle(within):
            for task in set(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
