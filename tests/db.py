"""Databases for the state store tests and benchmark: a SQLite file, and a real PostgreSQL.

PostgreSQL comes from `TEST_GOALKEEPER_POSTGRES_URL` (a server CI started; the role needs
CREATEDB) or else from a throwaway cluster this module starts: initdb in a temporary directory,
run as the `postgres` system user when we are root (PostgreSQL refuses to run as root), listening
only on a Unix socket inside that directory, so nothing touches the network and parallel runs
cannot collide on a port. Without PostgreSQL binaries the PostgreSQL cases skip and say why,
unless `TEST_GOALKEEPER_REQUIRE_POSTGRES` is set (CI), where they fail.

Every test gets its own database, created and dropped around it.

Use from a test module:  pytest_plugins = ["tests.db"]
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from goalkeeper.state import StateStore

URL_VARIABLE = "TEST_GOALKEEPER_POSTGRES_URL"
REQUIRE_VARIABLE = "TEST_GOALKEEPER_REQUIRE_POSTGRES"  # set in CI: never skip, fail instead
_SYSTEM_USER = "postgres"
_FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def postgres_bin() -> Path | None:
    """The directory of the newest installed PostgreSQL server binaries, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@contextmanager
def throwaway_cluster(*, durable: bool = False) -> Iterator[str]:
    """Start a private PostgreSQL cluster; yield its admin URL; stop and delete it after.

    `durable=False` turns fsync off: fine for tests, wrong for a benchmark of real cost.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    user = _SYSTEM_USER if as_root else pwd.getpwuid(os.geteuid()).pw_name
    base = Path(tempfile.mkdtemp(prefix="gk-pg-"))  # short: a socket path has ~100 bytes
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    if as_root:
        entry = pwd.getpwnam(_SYSTEM_USER)
        for path in (base, sockets):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def run(*argv: str) -> None:
        prefix = ["runuser", "-u", _SYSTEM_USER, "--"] if as_root else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, cwd=base, timeout=120)

    options = " ".join(
        ("-c listen_addresses=''", f"-c unix_socket_directories='{sockets}'")
        + (() if durable else _FAST)
    )
    started = False
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-t", "60",
            "-l", str(base / "server.log"), "start")  # fmt: skip
        started = True
        yield f"postgresql+asyncpg://{user}@/postgres?host={sockets}"
    finally:
        if started:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _server() -> Iterator[str]:
    configured = os.environ.get(URL_VARIABLE)
    if configured:
        yield configured
        return
    with throwaway_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The admin URL of a PostgreSQL server for this test session (or a skip saying why)."""
    if not os.environ.get(URL_VARIABLE) and postgres_bin() is None:
        why = f"PostgreSQL is not installed and {URL_VARIABLE} is not set"
        if os.environ.get(REQUIRE_VARIABLE):
            pytest.fail(f"{why}, but {REQUIRE_VARIABLE} is set (CI must test PostgreSQL)")
        pytest.skip(why)
    with _server() as url:
        yield url


async def create_database(admin_url: str) -> str:
    """A new empty database on the server; returns its URL."""
    name = f"gk_test_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


@asynccontextmanager
async def _empty_database(
    backend: str, folder: Path, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{folder}/goalkeeper.db"
        return
    admin_url = request.getfixturevalue("postgres_server")
    url = await create_database(admin_url)
    try:
        yield url
    finally:
        await drop_database(admin_url, url)


@pytest.fixture(params=["sqlite", "postgresql"])
async def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh database on PostgreSQL."""
    async with _empty_database(request.param, tmp_path / "state", request) as url:
        yield url


@pytest.fixture
async def store(state_url: str) -> AsyncIterator[StateStore]:
    """The state store on `state_url`, opened (and so migrated) and closed after the test."""
    opened = await StateStore.open(state_url)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def other_state_url(
    state_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[str]:
    """A second empty database, on the same kind of server as `state_url`."""
    backend = make_url(state_url).get_backend_name()
    async with _empty_database(backend, tmp_path / "other", request) as url:
        yield url
