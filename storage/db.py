"""Engine, sessions and migrations, built from a URL when asked (never at import time).

Transactions say whether they write. On SQLite only writers take the database's write
lock when they begin (BEGIN IMMEDIATE); readers begin deferred and, in WAL mode, read
alongside a writer. A database that does not answer within the timeout raises
StorageUnavailable, whatever the driver said.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_TIMEOUT = 15.0  # seconds a statement may wait for a lock or run
_WRITE = "vcc_write"  # execution option: this transaction writes


class StorageUnavailable(Exception):
    """The database could not be reached, or did not answer within the timeout."""


def normalise_url(url: str) -> str:
    """Accept the URLs operators usually write and pick the drivers we ship."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_private_file(database: str | None) -> None:
    """Create a SQLite database file that does not exist yet, readable by its owner only.

    It holds encrypted tokens and the audit trail, and sqlite3 would create it 0644 under
    the usual umask; SQLite gives the -wal and -shm files it makes beside it the database
    file's mode. An existing file keeps the mode it has.
    """
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return  # in memory, or a URI whose options are sqlite3's to read
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError):
        return  # there already; or no such directory, which SQLite reports when it connects
    os.close(fd)


def create_db_engine(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> Engine:
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        create_private_file(make_url(url).database)
        # Session work runs in worker threads, so the connection must be allowed to move
        # between them; the busy timeout lets a writer wait for another, within bounds.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": timeout})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # SQLAlchemy, not the driver, starts transactions (see _begin).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if make_url(url).database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # A writer takes the write lock at once: concurrent linkers then queue instead
            # of reading the same state and both writing, and none fails on a read lock it
            # cannot upgrade. A reader takes no lock and never waits for a writer.
            write = conn.get_execution_options().get(_WRITE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    millis = int(timeout * 1000)
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=timeout,
        connect_args={
            "connect_timeout": max(1, int(timeout)),
            # A locked row or a stuck statement fails in bounded time instead of hanging.
            "options": f"-c lock_timeout={millis} -c statement_timeout={millis}",
        },
    )


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations on this engine's database."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class Database:
    """Hands out short transactions; `read` and `write` keep blocking calls off the loop."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{_WRITE: True})
        # SQLite has one writer at a time. Writers of this process queue here, in order,
        # instead of in SQLite's busy handler, which sleeps and retries; and while they
        # wait they hold no worker thread. One lock per event loop (tests run several).
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def write_engine(self) -> Engine:
        """The engine for code that runs its own statements (slack_sdk's stores) and writes."""
        return self._writer

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        bind = self._writer if write else self.engine
        try:
            with Session(bind, expire_on_commit=False) as session, session.begin():
                yield session
        except (exc.OperationalError, exc.TimeoutError) as error:
            # Locked past the timeout, refused, dropped or cancelled: the caller only
            # needs to know the database did not answer. IntegrityError and the like
            # are bugs or rules and pass through.
            cause = getattr(error, "orig", None) or error
            raise StorageUnavailable(type(cause).__name__) from error

    def call(self, fn: Callable[[Session], T], *, write: bool = True) -> T:
        with self.transaction(write=write) as session:
            return fn(session)

    async def read(self, fn: Callable[[Session], T]) -> T:
        return await asyncio.to_thread(self.call, fn, write=False)

    async def write(self, fn: Callable[[Session], T]) -> T:
        if not self._sqlite:
            return await asyncio.to_thread(self.call, fn, write=True)
        loop = asyncio.get_running_loop()
        lock = self._write_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self.call, fn, write=True)

    def ping(self) -> bool:
        with self.transaction(write=False) as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        return True

    async def ready(self) -> bool:
        """True when the database answers; for /healthz."""
        try:
            return await asyncio.to_thread(self.ping)
        except StorageUnavailable:
            return False

    def dispose(self) -> None:
        self.engine.dispose()
