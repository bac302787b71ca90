"""Token custody: from the moment Salesforce hands out a token it is committed with its
link, or revoked. Nothing else.

A token between Salesforce's answer and its link's commit is recorded as pending, so a
crash in between leaves a row that the next start (or any monitor pass) revokes. When the
database cannot record it, the token is revoked at once: that needs no database.

A revoke Salesforce refuses (any 4xx OAuth error) is final: asking again gets the same
answer. One it does not answer is tried again, less and less often, and given up after
MAX_REVOKE_TRIES with an error in the log.

The monitor runs `sweep` at start and every tick; other leftovers of logins are tidied on
that schedule through `sweep_also` (the login flow's ended login DMs), not here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timedelta
from enum import Enum
from functools import partial
from typing import TypeVar

from sqlmodel import Session

from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import DatabaseDown, LinkError, SalesforceLoginFailed
from bot.links.errors import Store, salesforce
from bot.salesforce import SalesforceClient
from storage import repository as repo
from storage.models import PendingToken

log = logging.getLogger(__name__)

T = TypeVar("T")

# A token pending for longer than this was left by a dead process, or by a failed revoke.
PENDING_GRACE = timedelta(minutes=5)
# Revokes of a pending token that Salesforce does not answer: tried again after 5, 10,
# 20 ... minutes (at most 6 hours apart), about a day in all, then given up.
MAX_REVOKE_TRIES = 10
FIRST_RETRY = timedelta(minutes=5)
MAX_RETRY = timedelta(hours=6)


class Revoked(Enum):
    """What a revoke achieved."""

    DEAD = "dead"  # revoked, or Salesforce no longer knows the token
    FINAL = "final"  # Salesforce refused, or the token cannot be read: asking again is futile
    LATER = "later"  # Salesforce did not answer: the token may be live; try again


class Custody:
    """One token held between Salesforce's answer and its link's commit."""

    def __init__(self, store: Store, pending_id: int) -> None:
        self._store = store
        self._pending_id = pending_id
        self.committed = False

    async def commit(self, save: Callable[[Session], T]) -> T:
        """Run `save` and release the token in one transaction: the link now holds it."""

        def both(session: Session) -> T:
            result = save(session)
            repo.delete_pending_token(session, pending_id=self._pending_id)
            return result

        result = await self._store.write(both)
        self.committed = True
        return result


class PendingTokens:
    def __init__(
        self,
        *,
        store: Store,
        cipher: TokenCipher,
        salesforce: SalesforceClient,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._cipher = cipher
        self._sf = salesforce
        self._now = clock
        self._also: list[Callable[[], Awaitable[object]]] = []

    def sweep_also(self, tidy: Callable[[], Awaitable[object]]) -> None:
        """Run `tidy` with every sweep: what else interrupted logins leave behind (their
        login DMs, LoginFlow.close_ended) is tidied on the same schedule. The monitor,
        which runs the sweep, knows this class and not the login flow."""
        self._also.append(tidy)

    @asynccontextmanager
    async def custody(
        self, *, host: str, token: str, team_id: str, account_id: str
    ) -> AsyncIterator[Custody]:
        """Hold `token` until `Custody.commit`; on any failure before it, revoke it."""
        try:
            pending = await self._store.write(
                partial(
                    repo.add_pending_token,
                    login_host=host,
                    token_encrypted=self._cipher.encrypt(token),
                    team_id=team_id,
                    account_id=account_id,
                    now=self._now(),
                )
            )
        except DatabaseDown:
            if not await self.revoke(host, token):
                log.error("a Salesforce token could be neither recorded nor revoked")
            raise
        assert pending.id is not None
        held = Custody(self._store, pending.id)
        try:
            yield held
        except BaseException:
            if not held.committed:
                # Shielded: a cancelled request still gives its token back.
                await asyncio.shield(self._undo(host, token, pending.id))
            raise

    async def _undo(self, host: str, token: str, pending_id: int) -> None:
        if await self._revoke(host, token) is Revoked.LATER:
            return  # the pending row stays, and a later sweep revokes it
        with suppress(DatabaseDown):  # else the sweep finds it dead and drops the row
            await self._store.write(partial(repo.delete_pending_token, pending_id=pending_id))

    async def revoke(self, host: str, token: str) -> bool:
        """Revoke if Salesforce answers; True when the token is certainly dead."""
        return await self._revoke(host, token) is Revoked.DEAD

    async def _revoke(self, host: str, token: str) -> Revoked:
        try:
            await salesforce(partial(self._sf.revoke, host, token))
        except SalesforceLoginFailed as refused:
            log.warning("Salesforce refused to revoke a token (%s); not asked again", refused.error)
            return Revoked.FINAL
        except LinkError as exc:  # Salesforce did not answer
            log.warning("could not revoke a Salesforce token: %s", type(exc).__name__)
            return Revoked.LATER
        return Revoked.DEAD

    async def revoke_all(self, host: str, tokens: list[str]) -> None:
        for token in tokens:
            await self.revoke(host, token)

    async def _revoke_pending(self, pending: PendingToken) -> Revoked:
        try:
            token = self._cipher.decrypt(pending.token_encrypted)
        except UndecryptableToken:
            log.warning("a pending token cannot be decrypted; it cannot be revoked")
            return Revoked.FINAL
        return await self._revoke(pending.login_host, token)

    async def give_up(self, pending: PendingToken) -> bool:
        """Revoke a pending token and forget it; kept for a later try if Salesforce is down.

        True when the token is certainly dead.
        """
        revoked = await self._revoke_pending(pending)
        if revoked is not Revoked.LATER:
            await self._forget(pending)
        return revoked is Revoked.DEAD

    async def _forget(self, pending: PendingToken) -> None:
        assert pending.id is not None
        with suppress(DatabaseDown):  # else the next sweep finds it dead and drops the row
            await self._store.write(partial(repo.delete_pending_token, pending_id=pending.id))

    async def sweep(self) -> int:
        """Revoke tokens a dead process or a failed revoke left pending; returns how many.

        Then the other leftovers (`sweep_also`), each on its own: one failing stops none.
        """
        revoked = await self._revoke_stale()
        for tidy in self._also:
            try:
                await tidy()
            except DatabaseDown:  # the next sweep tries again
                log.warning("a sweep of what logins leave behind found no database")
            except Exception:  # a bug: logged, and the next sweep tries again
                log.exception("a sweep of what logins leave behind failed")
        return revoked

    async def _revoke_stale(self) -> int:
        now = self._now()
        stale = await self._store.read(
            partial(repo.stale_pending_tokens, created_before=now - PENDING_GRACE, now=now)
        )
        revoked = 0
        for pending in stale:
            outcome = await self._revoke_pending(pending)
            if outcome is Revoked.LATER:
                await self._retry_later(pending)
                continue
            await self._forget(pending)
            revoked += outcome is Revoked.DEAD
        if stale:
            log.info("revoked %d token(s) left pending by an interrupted link", revoked)
        return revoked

    async def _retry_later(self, pending: PendingToken) -> None:
        """Salesforce did not answer: back off, and after MAX_REVOKE_TRIES give up loudly."""
        assert pending.id is not None
        tries = pending.revoke_tries + 1
        if tries >= MAX_REVOKE_TRIES:
            log.error(
                "gave up revoking a Salesforce token left pending for VCC account %s "
                "(team %s) after %d tries over a day: Salesforce at %s did not answer. It may "
                "still be live: a Salesforce admin can revoke it under Setup → Connected Apps "
                "OAuth Usage",
                pending.account_id,
                pending.team_id,
                tries,
                pending.login_host,
            )
            await self._forget(pending)
            return
        wait = min(FIRST_RETRY * 2 ** (tries - 1), MAX_RETRY)
        with suppress(DatabaseDown):  # else it is simply tried again at the next sweep
            await self._store.write(
                partial(
                    repo.postpone_pending_token,
                    pending_id=pending.id,
                    revoke_tries=tries,
                    next_try_at=self._now() + wait,
                )
            )

    async def keep_rotated(
        self, *, account_pk: int, host: str, old_encrypted: str, new_token: str
    ) -> str | None:
        """Store a rotated refresh token the moment it arrives; its encrypted form, or None.

        None when the link changed meanwhile or the database did not answer: the new token
        then belongs to no link, and is revoked.
        """
        new_encrypted = self._cipher.encrypt(new_token)
        try:
            stored = await self._store.write(
                partial(
                    repo.replace_token, account_pk=account_pk, old=old_encrypted, new=new_encrypted
                )
            )
        except DatabaseDown:
            stored = False
        if stored:
            return new_encrypted
        await self.revoke(host, new_token)
        return None
