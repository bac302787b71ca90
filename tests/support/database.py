"""Another database client, for tests that need the bot's database to stop answering."""

from __future__ import annotations

import sqlite3
import threading

import psycopg
from sqlalchemy.engine import make_url


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
