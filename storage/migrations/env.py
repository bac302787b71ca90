"""Alembic environment: runs on a connection handed over by storage.db.upgrade, or on a URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

from storage import models  # noqa: F401 - registers the tables on SQLModel.metadata
from storage.db import create_db_engine

target_metadata = SQLModel.metadata

# Stable key for pg_advisory_lock: replicas starting together migrate one at a time.
MIGRATION_LOCK_KEY = 7_146_502_311


def run_on(connection) -> None:  # type: ignore[no-untyped-def]
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    # `alembic` on the command line (e.g. `alembic revision --autogenerate`).
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get(
        "DATABASE_URL", "sqlite:///vcc-bot.db"
    )
    engine = create_db_engine(url)
    with engine.begin() as conn:
        run_on(conn)
