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
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Executable
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

FRESH_READ_TIMEOUT_SECONDS = 2.0  # the sqlite3 busy timeout of a fresh reader
ANY = object()  # FileWatch.confirm: any value read back will do


class HealthError(Exception):
    """The store cannot be trusted with a write; the message says why, without a password."""


def sqlite_file(url: str) -> Path | None:
    """The database file a SQLite URL names, or None (PostgreSQL, memory, a file: URI)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    # The path SQLAlchemy's SQLite dialects hand the driver (os.path.abspath, no "~").
    return Path(os.path.abspath(database))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


class FileWatch:
    """The SQLite file a store opened, to tell when the configured path stops naming it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened = _identity(path)
        url = f"sqlite+aiosqlite:///file:{quote(str(path))}?mode=rw&uri=true"
        # Every connection opens the path anew (NullPool), and never creates the file (mode=rw).
        self._fresh = create_async_engine(
            url,
            poolclass=NullPool,
            hide_parameters=True,
            connect_args={"timeout": FRESH_READ_TIMEOUT_SECONDS},
        )

    async def aclose(self) -> None:
        await self._fresh.dispose()

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

    async def confirm(self, query: Executable, expected: object = ANY) -> None:
        """Raise HealthError unless a new connection on the path reads `expected` back.

        A commit into a file moved away, or into a deleted WAL, succeeds for the connection
        that made it; only a reader that opens the path again sees that it went nowhere.
        """
        if problem := self.problem():
            raise HealthError(problem)
        try:
            async with self._fresh.connect() as connection:
                value = (await connection.execute(query)).scalar_one_or_none()
        except (SQLAlchemyError, OSError) as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise HealthError(
                f"a new connection to {self.path} cannot read it ({type(err).__name__}: "
                f"{first}): the file or its WAL changed under this process (restart it)"
            ) from err
        if expected is not ANY and value != expected:
            raise HealthError(
                f"a new connection to {self.path} does not see what this process just wrote: "
                "the file changed under this process (restart it)"
            )
