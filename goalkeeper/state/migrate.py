"""Opening the database: the engine with the right SQLite settings, and the schema migrations.

SQLite gets WAL (readers never wait for the writer), foreign keys, a busy timeout, and
SQLAlchemy in charge of BEGIN: Python's sqlite3 module otherwise runs DDL and SELECTs outside
the transaction, so a migration or a read-then-write would not be atomic. Write transactions
begin IMMEDIATE, so they queue on the busy timeout instead of failing when two writers meet;
engines made with `readonly()` begin DEFERRED and read a snapshot beside a running write.

Migrations (Alembic, files in goalkeeper/migrations) run at every open, inside one transaction;
on PostgreSQL an advisory lock keeps two starting processes from migrating at once. This module
never decides what to store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from goalkeeper.state.schema import metadata

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
_READONLY = "goalkeeper_readonly"
_MIGRATION_LOCK = 0x6B656570  # any constant shared by every Goalkeeper process


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`; for SQLite the parent directory is created first."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Plans are made for each execution: a generic plan cached while the findings table
        # was empty turned the next tick's lookups into nested seq scans (90 s instead of 2 s).
        settings = {"plan_cache_mode": "force_custom_plan", "application_name": "goalkeeper"}
        return create_async_engine(
            parsed,
            pool_pre_ping=True,
            hide_parameters=True,
            connect_args={"server_settings": settings},
        )
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # Parameters stay out of error messages: they are customer data, and 100,000 rows long.
    engine = create_async_engine(parsed, hide_parameters=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN, see the docstring
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable across crashes of the process
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        readonly = connection.get_execution_options().get(_READONLY, False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def readonly(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for transactions that only read (SQLite: a snapshot, no write lock)."""
    return engine.execution_options(**{_READONLY: True})


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = metadata
    return config


def upgrade(connection: Connection) -> None:
    """Bring the schema to the newest revision; a no-op when it is there already."""
    if connection.dialect.name == "postgresql":
        # Held to the end of the transaction, so a second process waits, then finds head.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    command.upgrade(alembic_config(connection), "head")


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def new_revision(message: str) -> None:
    """Write a new migration from the difference between schema.py and the newest revision.

    For developers only; review the file it writes before committing it.
    """
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_sync_engine(f"sqlite:///{scratch}/scratch.db")
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
            head = current_revision(connection) or "0000"
            command.revision(
                alembic_config(connection),
                message=message,
                autogenerate=True,
                rev_id=f"{int(head) + 1:04d}",
            )
        engine.dispose()
