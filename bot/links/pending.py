"""Token custody: from the moment Salesforce hands out a token it is committed with its
link, or revoked. Nothing else.

A token between Salesforce's answer and its link's commit is recorded as pending, so a
crash in between leaves a row that the next start (or any monitor pass) revokes. When the
database cannot record it, the token is revoked at once: that needs no database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from sqlmodel import Session

from bot.crypto import TokenCipher, UndecryptableToken
from bot.domain import DatabaseDown, LinkError
from bot.links.errors import Store, salesforce
from bot.salesforce import SalesforceClient
from storage import repository as repo
from storage.models import PendingToken

log = logging.getLogger(__name__)

T = TypeVar("T")

# A token pending for longer than this was left by a dead process, or by a failed revoke.
PENDING_GRACE = timedelta(minutes=5)


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
        if not await self.revoke(host, token):
            return  # the pending row stays, and a later sweep revokes it
        with suppress(DatabaseDown):  # revoked already; the sweep finds it dead, drops the row
            await self._store.write(partial(repo.delete_pending_token, pending_id=pending_id))

    async def revoke(self, host: str, token: str) -> bool:
        """Revoke if Salesforce answers; True when the token is certainly dead."""
        try:
            await salesforce(partial(self._sf.revoke, host, token))
        except LinkError as exc:
            log.warning("could not revoke a Salesforce token: %s", type(exc).__name__)
            return False
        return True

    async def revoke_all(self, host: str, tokens: list[str]) -> None:
        for token in tokens:
            await self.revoke(host, token)

    async def give_up(self, pending: PendingToken) -> bool:
        """Revoke a pending token and forget it; kept for a later try if Salesforce is down."""
        try:
            token: str | None = self._cipher.decrypt(pending.token_encrypted)
        except UndecryptableToken:
            log.warning("a pending token cannot be decrypted; it cannot be revoked")
            token = None
        if token is not None and not await self.revoke(pending.login_host, token):
            return False
        assert pending.id is not None
        with suppress(DatabaseDown):  # else the next sweep finds it dead and drops the row
            await self._store.write(partial(repo.delete_pending_token, pending_id=pending.id))
        return token is not None

    async def sweep(self) -> int:
        """Revoke tokens a dead process or a failed revoke left pending; returns how many."""
        cutoff = self._now() - PENDING_GRACE
        stale = await self._store.read(partial(repo.stale_pending_tokens, created_before=cutoff))
        revoked = 0
        for pending in stale:
            revoked += await self.give_up(pending)
        if stale:
            log.info("revoked %d token(s) left pending by an interrupted link", revoked)
        return revoked

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
