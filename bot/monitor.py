"""The health monitor: verifies every linked account once per interval, across replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial

from bot.links import LinkHealth, PendingTokens, Store
from storage import repository as repo
from storage.models import utcnow

log = logging.getLogger(__name__)

BATCH = 50
MAX_TICK_SECONDS = 60.0


class HealthMonitor:
    """Each pass checks the accounts that are due.

    Each check is claimed with one conditional UPDATE (LinkHealth.check_scheduled) that
    moves the account's next check one interval ahead; of several replicas passing at
    once exactly one wins each account, so each link is checked once per interval however
    many replicas run.
    """

    def __init__(
        self,
        *,
        store: Store,
        health: LinkHealth,
        pending: PendingTokens,
        interval_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._health = health
        self._pending = pending
        self._tick = min(interval_seconds, MAX_TICK_SECONDS)
        self._now = clock

    async def run_once(self) -> int:
        """Check every account that is due now; returns how many this replica checked."""
        checked = 0
        while True:
            due = await self._store.read(partial(repo.due_for_check, now=self._now(), limit=BATCH))
            claimed = 0
            for account in due:
                if await self._health.check_scheduled(account):
                    claimed += 1
            checked += claimed
            if len(due) < BATCH or claimed == 0:
                return checked

    async def run_forever(self) -> None:
        """Tokens left pending by a dead process first, then a pass every tick."""
        await self._guarded(self._pending.sweep)
        while True:
            await asyncio.sleep(self._tick)
            await self._guarded(self.run_once)
            await self._guarded(self._pending.sweep)

    async def _guarded(self, step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # the monitor must outlive any one failure; it is logged
            log.exception("health monitor step failed")
