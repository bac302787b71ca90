"""Another database client: to make the bot's database stop answering, or to read it."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from storage.models import PendingToken, VccAccount
from tests.support.constants import TEAM


class DatabaseHold:
    """Another client holding the bot's database so that it cannot write.

    SQLite: the write lock (BEGIN IMMEDIATE). PostgreSQL: exclusive locks on the tables a
    callback writes. Either way the bot's writes wait for its DATABASE_TIMEOUT and fail,
    which is what a database that stops answering looks like from the bot.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._release = threading.Event()
        self._held = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> None:
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self._thread.start()
        assert self._held.wait(10), "could not take the database lock"

    def _hold(self) -> None:
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            conn = sqlite3.connect(parsed.database, isolation_level=None, timeout=10)
            conn.execute("BEGIN IMMEDIATE")
            self._held.set()
            self._release.wait(60)
            conn.execute("ROLLBACK")
            conn.close()
            return
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "LOCK TABLE pending_token, audit_event, vcc_account IN ACCESS EXCLUSIVE MODE"
            )
            self._held.set()
            self._release.wait(60)
            conn.rollback()

    def release(self) -> None:
        self._release.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def account_row(db: Engine, account: str = "acme", team: str = TEAM) -> Any:
    """An account's row, read on a connection of the test's own (not through the bot)."""
    table = VccAccount.__table__
    with db.connect() as conn:
        return conn.execute(
            select(table).where(table.c.team_id == team, table.c.account_id == account)
        ).one_or_none()


def pending_count(db: Engine) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).select_from(PendingToken.__table__)).scalar_one()


@contextmanager
def fresh_postgres(base: str, prefix: str = "vcc_test") -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of `base`, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
