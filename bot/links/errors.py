"""Foreign errors become domain errors here, in one table, as httpx maps httpcore's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from sqlmodel import Session

from bot.domain import DatabaseDown, ForgedResponse, SalesforceDown, SalesforceLoginFailed
from bot.salesforce import SalesforceRejected, SalesforceUnavailable, SignatureMismatch
from storage.db import Database, StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# A write the database refused is tried again this many times, backing off up to a
# minute between tries (about ten minutes in all), then given up with an error in the log.
RETRIES = 12
MAX_BACKOFF = 60.0


class Spawner(Protocol):
    def spawn(self, work: Coroutine[Any, Any, Any]) -> Any: ...


@contextmanager
def domain_errors() -> Iterator[None]:
    """Translate Salesforce and storage failures raised inside the block.

    SalesforceRejected    -> SalesforceLoginFailed (its OAuth or REST error code)
    SalesforceUnavailable -> SalesforceDown
    SignatureMismatch     -> ForgedResponse (with the tokens to revoke)
    StorageUnavailable    -> DatabaseDown
    """
    try:
        yield
    except SalesforceRejected as exc:
        raise SalesforceLoginFailed(exc.error, exc.description) from None
    except SalesforceUnavailable:
        raise SalesforceDown() from None
    except SignatureMismatch as exc:
        raise ForgedResponse(exc.tokens) from None
    except StorageUnavailable:
        raise DatabaseDown() from None


async def salesforce(call: Callable[[], Awaitable[T]]) -> T:
    """One Salesforce call, its failures in domain words."""
    with domain_errors():
        return await call()


class Store:
    """The database as the core sees it: short transactions, failures as DatabaseDown."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def read(self, fn: Callable[[Session], T]) -> T:
        with domain_errors():
            return await self._db.read(fn)

    async def write(self, fn: Callable[[Session], T]) -> T:
        with domain_errors():
            return await self._db.write(fn)

    async def write_or_retry(self, fn: Callable[[Session], object], later: Spawner) -> None:
        """Write now; if the database does not answer, keep trying in the background."""
        try:
            await self.write(fn)
        except DatabaseDown:
            later.spawn(self._retry(fn))

    async def _retry(self, fn: Callable[[Session], object]) -> None:
        backoff = 0.5
        for _ in range(RETRIES):
            await asyncio.sleep(backoff)
            try:
                await self.write(fn)
            except DatabaseDown:
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            log.info("recorded an event the database had refused earlier")
            return
        log.error("an audit event could not be recorded: the database did not answer")
