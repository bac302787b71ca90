"""The health monitor: verifies every linked account once per interval, across replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

from bot.links import MONITOR, LinkService
from storage import repository as repo
from storage.db import Database
from storage.models import utcnow

log = logging.getLogger(__name__)

BATCH = 50
MAX_TICK_SECONDS = 60.0


class HealthMonitor:
    """Each pass claims the accounts that are due and checks them.

    A claim is one conditional UPDATE that moves the account's next check one interval
    ahead; of several replicas passing at once exactly one wins each account, so each link
    is checked once per interval however many replicas run.
    """

    def __init__(
        self,
        *,
        db: Database,
        links: LinkService,
        interval_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._links = links
        self._interval = timedelta(seconds=interval_seconds)
        self._tick = min(interval_seconds, MAX_TICK_SECONDS)
        self._now = clock

    async def run_once(self) -> int:
        """Check every account that is due now; returns how many this replica checked."""
        checked = 0
        while True:
            now = self._now()
            due = await self._db.run(partial(repo.due_for_check, now=now, limit=BATCH))
            claimed = 0
            for account in due:
                assert account.id is not None
                won = await self._db.run(
                    partial(
                        repo.claim_check,
                        account_pk=account.id,
                        seen=account.next_check_at,
                        until=now + self._interval,
                    )
                )
                if won:
                    claimed += 1
                    await self._links.check(account.team_id, account.account_id, actor=MONITOR)
            checked += claimed
            if len(due) < BATCH or claimed == 0:
                return checked

    async def run_forever(self) -> None:
        """Tokens left pending by a dead process first, then a pass every tick."""
        await self._guarded(self._links.revoke_stale_pending)
        while True:
            await asyncio.sleep(self._tick)
            await self._guarded(self.run_once)
            await self._guarded(self._links.revoke_stale_pending)

    async def _guarded(self, step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # the monitor must outlive any one failure; it is logged
            log.exception("health monitor step failed")
