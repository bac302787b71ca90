"""The health monitor: verifies every linked account once per interval, across replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial

from bot.links import LinkHealth, PendingTokens, Store
from bot.salesforce import MAX_CONNECTIONS
from storage import repository as repo
from storage.models import VccAccount, utcnow

log = logging.getLogger(__name__)

# Due accounts read per page: a pass holds at most this many rows (plus those in checks).
BATCH = 100
MAX_TICK_SECONDS = 60.0
# Checks under way at once in one replica. A check's three Salesforce calls run one after
# another, so this is also how many of the shared client's MAX_CONNECTIONS (32) the
# monitor can hold. It keeps 8 for people (/vcc status, logins, revokes), who would
# otherwise queue behind it and fail after POOL_WAIT. At 200 ms a call a check takes
# 0.6 s: 24 at once check 10,000 links in about 250 s; 16 would need 375 s.
RESERVED_FOR_PEOPLE = 8
MONITOR_CONCURRENCY = MAX_CONNECTIONS - RESERVED_FOR_PEOPLE
FOLLOW_UPS = 2


class HealthMonitor:
    """Each pass checks the accounts that are due, `concurrency` at a time.

    Each check is claimed with one conditional UPDATE (LinkHealth.check_scheduled) that
    moves the account's next check one interval ahead; of several replicas passing at
    once exactly one wins each account, so each link is checked once per interval however
    many replicas run. A claim is taken only when its check can start, so its lease
    covers the check and not a wait in a queue.
    """

    def __init__(
        self,
        *,
        store: Store,
        health: LinkHealth,
        pending: PendingTokens,
        interval_seconds: float,
        clock: Callable[[], datetime] = utcnow,
        concurrency: int = MONITOR_CONCURRENCY,
    ) -> None:
        if concurrency < 1:
            raise ValueError("the monitor needs at least one check at a time")
        self._store = store
        self._health = health
        self._pending = pending
        self._tick = min(interval_seconds, MAX_TICK_SECONDS)
        self._now = clock
        self._concurrency = concurrency

    async def run_once(self) -> int:
        """Check every account that is due now; returns how many this replica checked.

        Due accounts are read a page at a time and each check starts when one of the
        `concurrency` slots is free: a pass over 10,000 links holds one page of rows and at
        most `concurrency` checks, never all of them. A check that fails (the database
        stopped answering) ends the pass; the checks under way still record their results.
        """
        slots = asyncio.Semaphore(self._concurrency)
        checked = 0

        async def check(account: VccAccount) -> None:
            nonlocal checked
            try:
                if await self._health.check_scheduled(account) is not None:
                    checked += 1
            finally:
                slots.release()

        after = 0
        async with asyncio.TaskGroup() as checks:
            while True:
                due = await self._store.read(
                    partial(repo.due_for_check, now=self._now(), limit=BATCH, after_id=after)
                )
                for account in due:
                    await slots.acquire()
                    checks.create_task(check(account))
                if len(due) < BATCH:
                    break
                assert due[-1].id is not None
                after = due[-1].id
        return checked

    async def run_forever(self) -> None:
        """Tokens left pending by a dead process first, then a pass every tick.

        A pass that checked links is followed at once by another (at most FOLLOW_UPS): a
        break makes its org's other links due (LinkHealth), and finding them in the same
        breath lets their channel hear of them in one message.
        """
        await self._guarded(self._pending.sweep)
        while True:
            await asyncio.sleep(self._tick)
            for _ in range(1 + FOLLOW_UPS):
                if not await self._guarded(self.run_once):
                    break
            await self._guarded(self._pending.sweep)

    async def _guarded(self, step: Callable[[], Awaitable[object]]) -> object:
        try:
            return await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # the monitor must outlive any one failure; it is logged
            log.exception("health monitor step failed")
            return None
