"""Proof that the store still writes where it should: the SQLite file's identity, and fresh reads.

`SELECT 1` proves nothing about a SQLite file: an open connection keeps writing into a file that
was moved away (or into a WAL that was deleted) and every commit "succeeds" into something no
new process will ever read. So the store remembers which file (device and inode) it opened at
the configured path, and checks that the path still names it; and it reads back through a new
connection, opened on the path, what its pool just wrote. PostgreSQL keeps its own files: there
these checks are empty. Nothing here decides what to store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

FRESH_READ_TIMEOUT_SECONDS = 2.0  # the sqlite3 busy timeout of a fresh reader


def sqlite_file(url: str) -> Path | None:
    """The database file a SQLite URL names, or None (PostgreSQL, memory, a file: URI)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


@dataclass(frozen=True, slots=True)
class FileWatch:
    """The SQLite file a store opened, to tell when the configured path stops naming it."""

    path: Path
    opened: tuple[int, int] | None

    @classmethod
    def of(cls, path: Path) -> FileWatch:
        return cls(path, _identity(path))

    def problem(self) -> str | None:
        """Why the file at the path is not the one the store writes to, or None."""
        now = _identity(self.path)
        if now is None:
            return (
                f"the database file {self.path} is missing: this process writes into a file "
                "nobody will read (restart it)"
            )
        if now != self.opened:
            return (
                f"the database file {self.path} was replaced since this process opened it: "
                "it writes into the old file (restart it)"
            )
        return None

    def fresh_reader(self) -> AsyncEngine:
        """An engine whose every connection opens the path anew (and never creates the file)."""
        url = f"sqlite+aiosqlite:///file:{quote(str(self.path))}?mode=rw&uri=true"
        return create_async_engine(
            url,
            poolclass=NullPool,
            hide_parameters=True,
            connect_args={"timeout": FRESH_READ_TIMEOUT_SECONDS},
        )
