"""The store proves it can be written and read back, and keeps what restarted gauges need.

Real SQLite files in the test's folder (moved, replaced, their WAL deleted with real file
operations) and a real PostgreSQL where tests/db.py offers one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from goalkeeper.model import OutgoingMail
from goalkeeper.state import LastTicks, NewMessage, OutboxTally, StateError, StateStore, TickRecord
from goalkeeper.state.schema import heartbeats

pytest_plugins = ["tests.db"]  # the state_url and postgres_server fixtures

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


def mail(key: str, run: str) -> NewMessage:
    rendered = OutgoingMail(recipient=key, sender="ops@p.example", subject="s", text="t",
                            html="<p>t</p>", message_id=f"<{run}.{key}@p.example>")  # fmt: skip
    return NewMessage.email(rendered, recipient_key=key)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "goalkeeper.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[StateStore]:
    opened = await StateStore.open(f"sqlite+aiosqlite:///{db_path}")
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_check_writes_a_heartbeat_and_reads_it_back(
    store: StateStore, state_url: str
) -> None:
    await store.check(now=T0)
    await store.check(now=T0 + timedelta(minutes=1))
    engine = create_async_engine(state_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(heartbeats))).all()
    finally:
        await engine.dispose()
    assert [(row.written_at) for row in rows] == [T0 + timedelta(minutes=1)]  # one row, moved


async def test_heartbeats_of_processes_gone_for_a_day_are_deleted(state_url: str) -> None:
    first, second = await StateStore.open(state_url), await StateStore.open(state_url)
    try:
        await first.check(now=T0)
        await second.check(now=T0 + timedelta(days=2))
    finally:
        await first.aclose()
        await second.aclose()
    engine = create_async_engine(state_url)
    try:
        async with engine.connect() as connection:
            kept = (await connection.execute(select(heartbeats.c.written_at))).scalars().all()
    finally:
        await engine.dispose()
    assert kept == [T0 + timedelta(days=2)]


def move_away_and_replace(db_path: Path) -> None:
    """What an operator's `mv` and a restored copy do: a new file at the path, the WAL gone."""
    moved = db_path.with_name("moved.db")
    os.rename(db_path, moved)
    shutil.copyfile(moved, db_path)
    db_path.with_name(db_path.name + "-wal").unlink()


async def test_a_replaced_sqlite_file_fails_the_check_and_every_commit(
    sqlite_store: StateStore, db_path: Path
) -> None:
    await sqlite_store.commit_tick(run_id="r0", started_at=T0, upserts=[], messages=[])
    await sqlite_store.check(now=T0)
    move_away_and_replace(db_path)
    for _ in range(2):  # and it stays so: the pool still writes into the old file
        with pytest.raises(StateError, match="was replaced since this process opened it"):
            await sqlite_store.check(now=T0)
    with pytest.raises(StateError, match="replaced"):
        await sqlite_store.commit_tick(
            run_id="r1", started_at=T0, upserts=[], messages=[mail("a@b.example", "r1")]
        )
    with pytest.raises(StateError, match="replaced"):
        await sqlite_store.finish_run("r0", finished_at=T0, summary={})


async def test_a_deleted_wal_fails_the_check_and_the_commit(
    sqlite_store: StateStore, db_path: Path
) -> None:
    await sqlite_store.check(now=T0)
    db_path.with_name(db_path.name + "-wal").unlink()  # the file itself stays where it was
    with pytest.raises(StateError, match="cannot read it"):
        await sqlite_store.check(now=T0)
    with pytest.raises(StateError, match="cannot read it"):
        await sqlite_store.commit_tick(run_id="r1", started_at=T0, upserts=[], messages=[])


async def test_a_missing_sqlite_file_is_named_and_not_created_again(
    sqlite_store: StateStore, db_path: Path
) -> None:
    await sqlite_store.check(now=T0)
    os.rename(db_path, db_path.with_name("elsewhere.db"))
    with pytest.raises(StateError, match=f"the database file {db_path} is missing"):
        await sqlite_store.check(now=T0)
    assert not await asyncio.to_thread(db_path.exists)


async def test_a_write_in_flight_does_not_make_the_check_wait(sqlite_store: StateStore) -> None:
    # SQLite has one write lock: a heartbeat would queue behind the tick's commit for as long
    # as it takes. The check then proves the file readable instead.
    async with sqlite_store._writing():
        async with asyncio.timeout(5):
            await sqlite_store.check(now=T0)
    await sqlite_store.check(now=T0)


async def test_outbox_tally_counts_pending_and_failed_per_channel(store: StateStore) -> None:
    assert await store.outbox_tally() == [
        OutboxTally("email", 0, None, 0),
        OutboxTally("telegram", 0, None, 0),
    ]
    first = await store.commit_tick(
        run_id="r1", started_at=T0, upserts=[],
        messages=[mail("a@b.example", "r1"), mail("c@d.example", "r1")],
    )  # fmt: skip
    later = T0 + timedelta(hours=3)
    await store.commit_tick(
        run_id="r2", started_at=later, upserts=[], messages=[mail("e@f.example", "r2")]
    )
    await store.mark_failed(first[0].id, reason="550", now=later)
    assert await store.outbox_tally() == [
        OutboxTally("email", 2, T0, 1),
        OutboxTally("telegram", 0, None, 0),
    ]
    await store.mark_sent(first[1].id, now=later)
    (email, _) = await store.outbox_tally()
    assert email == OutboxTally("email", 1, later, 1)


async def test_last_ticks_reads_back_the_newest_record_and_success(store: StateStore) -> None:
    assert await store.last_ticks() == LastTicks(last=None, last_success_at=None)
    counts = (("redis", 6379, "tcp", "reachable", 2),)
    good = TickRecord("success", targets=12, open_findings=counts,
                      owners_unresolved=1)  # fmt: skip
    bad = TickRecord("failure", targets=12, open_findings=(), owners_unresolved=0)
    await store.finish_run("r1", finished_at=T0, summary=good.summary())
    await store.finish_run("r2", finished_at=T0 + timedelta(days=1), summary=bad.summary())
    # A summary from before records were kept says nothing about the outcome: not counted.
    await store.finish_run("r0", finished_at=T0 + timedelta(days=2), summary={"findings": 3})
    assert await store.last_ticks() == LastTicks(last=bad, last_success_at=T0)
    assert good.summary()["findings"] == 2
