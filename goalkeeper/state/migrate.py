"""Opening the database: the engine with the right SQLite settings, and the schema migrations.

SQLite gets WAL, foreign keys, a busy timeout and SQLAlchemy in charge of BEGIN (Python's sqlite3
otherwise runs DDL and SELECTs outside the transaction); writes begin IMMEDIATE and queue,
`readonly()` engines read a snapshot beside a running write. Every open checks the schema in
one transaction (on PostgreSQL under an advisory lock). Alembic is imported only when a
migration has to run (its cost: docs/performance.md); a fresh database is built from schema.py
and stamped. This module never decides what to store.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, event, inspect, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from goalkeeper.state.schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# The newest file in goalkeeper/migrations/versions; a test fails until a new one is named here.
HEAD_REVISION = "0008_evidence"
BUSY_TIMEOUT_MS = 30_000
_READONLY = "goalkeeper_readonly"
_MIGRATION_LOCK = 0x6B656570  # any constant shared by every Goalkeeper process
# Alembic's version table exactly as Alembic creates it (alembic.ddl.impl.version_table_impl),
# so a database stamped here is one Alembic reads and migrates later.
_VERSIONS = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`; for SQLite the parent directory is created first."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Plans are made for each execution: a generic plan cached while the findings table
        # was empty turned the next tick's lookups into nested seq scans (docs/performance.md).
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
        _set_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable across crashes of the process
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        readonly = connection.get_execution_options().get(_READONLY, False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def _set_wal(cursor: Any) -> None:
    """Switch to WAL (a property of the file, kept once set). Two processes opening a new file
    at once may both try, and SQLite answers the loser "database is locked" at once, without
    waiting out busy_timeout: so wait here, as long as busy_timeout would."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as err:  # the driver's OperationalError, whichever driver wraps it
            if "database is locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # in the driver's own thread, not on the event loop


def readonly(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for transactions that only read (SQLite: a snapshot, no write lock)."""
    return engine.execution_options(**{_READONLY: True})


def alembic_config(connection: Connection | None = None) -> Config:
    # Imported here, not at the top: the daemon at head never loads Alembic (memory).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    config.attributes["target_metadata"] = metadata
    return config


def upgrade(connection: Connection) -> None:
    """Bring the schema to HEAD_REVISION; a no-op, without Alembic, when it is there already."""
    if connection.dialect.name == "postgresql":
        # Held to the end of the transaction, so a second process waits, then finds head.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    tables = set(inspect(connection).get_table_names())
    if _VERSIONS.name in tables:
        if set(connection.scalars(_VERSIONS.select())) == {HEAD_REVISION}:
            return
    elif tables.isdisjoint(metadata.tables):
        _create_at_head(connection)
        return
    _migrate(connection)


def _create_at_head(connection: Connection) -> None:
    """Build an empty database from schema.py and stamp it, as Alembic does from scratch.

    The same tables the migrations would build (a test compares the two), without loading
    Alembic to replay every revision.
    """
    metadata.create_all(connection, checkfirst=False)
    _VERSIONS.create(connection)
    connection.execute(_VERSIONS.insert().values(version_num=HEAD_REVISION))


class MigrationError(Exception):
    """The schema cannot be brought to head: Alembic's refusal, in words, as a plain error."""


def _migrate(connection: Connection) -> None:
    """Run the migrations up to head; Alembic itself refuses a revision it does not know."""
    # Imported here, not at the top: the daemon at head never loads Alembic (memory).
    from alembic import command
    from alembic.util import CommandError

    try:
        command.upgrade(alembic_config(connection), "head")
    except CommandError as err:  # e.g. a revision from a newer Goalkeeper than this one
        raise MigrationError(f"{err} (this Goalkeeper knows up to {HEAD_REVISION})") from None


def current_revision(connection: Connection) -> str | None:
    # Imported here, not at the top: the daemon at head never loads Alembic (memory).
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def new_revision(message: str) -> None:
    """Write a new migration from the difference between schema.py and the newest revision.

    For developers only; review the file it writes, and set HEAD_REVISION to its id, before
    committing it.
    """
    # Imported here, not at the top: the daemon at head never loads Alembic (memory).
    from alembic import command

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
