"""The state store: findings history, runs and the outbox, on SQLite or PostgreSQL.

Everything a tick decides is written in ONE transaction before anything is sent (`committing`),
and senders then move each message to sent or failed. Writes are bulk statements (INSERT ... ON
CONFLICT executed for a thousand rows at a time), not one ORM object per row. Database failures
leave as StateError, so callers need not import SQLAlchemy. This module decides nothing about
lifecycle or policy (goalkeeper.lifecycle does), and never logs or raises the URL's password.
Past 300 lines: each query is short, and all of them are the store's one interface to SQL.
"""

from __future__ import annotations

import secrets
from collections.abc import (
    AsyncIterator,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from goalkeeper.config import redact_url
from goalkeeper.crashpoints import crash_point
from goalkeeper.lifecycle import FindingKey, FindingRecord
from goalkeeper.logs import first_line
from goalkeeper.model import IPAddress
from goalkeeper.state.browse import Browse
from goalkeeper.state.commit import OutboxWriter
from goalkeeper.state.errors import StateError, StateUnavailable
from goalkeeper.state.errors import translated as _translated
from goalkeeper.state.errors import translating as _translating
from goalkeeper.state.filewatch import ANY, FileWatch, HealthError, sqlite_file
from goalkeeper.state.history import StatusChange, write_changes
from goalkeeper.state.latent import LatentRecord, mark_told, read_latent, read_told, replace_latent
from goalkeeper.state.migrate import MigrationError, create_engine, readonly, upgrade
from goalkeeper.state.outbox import Channel, NewMessage, OutboxMessage, parse_keys
from goalkeeper.state.records import LastTicks, OutboxTally, read_last_ticks, read_outbox_tally
from goalkeeper.state.rows import (
    finding_row,
    message_from_row,
    record_from_row,
)
from goalkeeper.state.schema import UtcDateTime, findings, heartbeats, outbox, runs
from goalkeeper.state.supersede import require_pending
from goalkeeper.state.tickstats import TickStats, write_stats

MessageRef = int | str  # the outbox row id, or the message's Message-ID
_KEY_COLUMNS = ("address", "port", "protocol")
# Owned by mark_sent: a tick planned before a mail went out must not write the old counts back.
_NOTIFY_COLUMNS = ("times_notified", "last_notified_at", "notified_grade")
# Rows per statement, and addresses per IN (...): far below both databases' limit on bound
# parameters, and short enough that preparing them never blocks the event loop for long.
_BATCH = 1_000
HEARTBEAT_KEPT = timedelta(days=1)  # a heartbeat row older than this is of a process long gone


class StateStore:
    """Async access to the store. Open with `await StateStore.open(url)`; close with `aclose()`."""

    def __init__(self, engine: AsyncEngine, *, url: str, watch: FileWatch | None = None) -> None:
        self._engine = engine
        self._reader = readonly(engine)
        self.browse = Browse(self._reader)  # the staff console's read-only queries
        self._where = redact_url(url)
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert
        # SQLite only: the file opened at the configured path, and a reader that opens it anew.
        self._watch = watch
        self._writer = secrets.token_hex(8)  # this store's heartbeat row
        self._writes = 0  # write transactions in flight (SQLite: they hold the write lock)

    def __repr__(self) -> str:
        return f"StateStore({self._where})"

    @classmethod
    async def open(cls, url: str) -> StateStore:
        """Connect, and bring the schema up to date (stored rows are kept)."""
        try:
            engine = create_engine(url)
        except (SQLAlchemyError, ValueError, OSError) as err:
            raise StateUnavailable(
                f"cannot use state.url {redact_url(url)}: {type(err).__name__}: {first_line(err)}"
            ) from None
        try:
            async with engine.begin() as connection:
                await connection.run_sync(upgrade)
        except (SQLAlchemyError, OSError, MigrationError) as err:
            await engine.dispose()
            raise StateUnavailable(
                f"cannot open the state store {redact_url(url)}: {type(err).__name__}: "
                f"{first_line(err)}"
            ) from None
        path = sqlite_file(url)
        return cls(engine, url=url, watch=FileWatch(path) if path is not None else None)

    @classmethod
    @asynccontextmanager
    async def opened(cls, url: str) -> AsyncIterator[StateStore]:
        """`open` for the length of a `with` block, closed however it ends."""
        store = await cls.open(url)
        try:
            yield store
        finally:
            await store.aclose()

    async def aclose(self) -> None:
        await self._engine.dispose()
        if self._watch is not None:
            await self._watch.aclose()

    @_translated
    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        async with self._reader.connect() as connection:
            await connection.execute(text("SELECT 1"))

    @_translated
    async def check(self, *, now: datetime) -> None:
        """Raise StateError, saying why, unless the store can be written and read back now.

        A heartbeat row gets a new token through the pool, which is then read back: on SQLite
        through a new connection on the configured path, which proves that the path still names
        the file the pool writes and that its WAL is intact. While a write of this store holds
        SQLite's one write lock the heartbeat would only queue behind it: then the file is
        checked and read, not written (that write confirms itself when it commits).
        """
        if self._watch is not None and (problem := self._watch.problem()):
            raise StateError(problem)
        if self._watch is not None and self._writes:
            await self._confirm(select(func.count()).select_from(heartbeats))
            return
        token = secrets.token_hex(16)
        statement = self._insert(heartbeats).values(
            writer=self._writer, token=token, written_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=["writer"], set_={"token": token, "written_at": now}
        )
        async with self._writing() as connection:
            await connection.execute(statement)
            stale = heartbeats.c.written_at < now - HEARTBEAT_KEPT
            await connection.execute(delete(heartbeats).where(stale))
        query = select(heartbeats.c.token).where(heartbeats.c.writer == self._writer)
        if self._watch is not None:
            await self._confirm(query, token)
            return
        async with self._reader.connect() as connection:
            if (await connection.execute(query)).scalar_one_or_none() != token:
                raise StateError(f"the heartbeat just written to {self._where} was not read back")

    @_translated
    async def outbox_tally(self) -> list[OutboxTally]:
        """Per channel: pending messages, the oldest one's creation, failed ones. One query."""
        async with self._reader.connect() as connection:
            return await read_outbox_tally(connection)

    @_translated
    async def last_ticks(self) -> LastTicks:
        """The newest finished tick's record, and when the newest successful tick finished."""
        async with self._reader.connect() as connection:
            return await read_last_ticks(connection)

    @_translated
    async def load_findings(
        self, addresses: Collection[IPAddress] | None = None, *, open_anywhere: bool = False
    ) -> dict[FindingKey, FindingRecord]:
        """Every record (open or resolved) on `addresses`, or every record when None;
        with `open_anywhere`, every open record elsewhere too.

        A tick passes the addresses it scanned plus those with findings, and `open_anywhere`:
        that is all `plan_lifecycle` needs (an open record on a host not scanned becomes
        unmonitored; resolved records elsewhere are left alone).
        """
        query = select(findings)
        loaded: dict[FindingKey, FindingRecord] = {}
        async with self._reader.connect() as connection:
            if addresses is None:
                queries = [query]
            else:
                wanted = sorted({str(a) for a in addresses})
                # With every open record read at once, only the resolved are read by address.
                on = query.where(findings.c.resolved_at.is_not(None)) if open_anywhere else query
                queries = [
                    on.where(findings.c.address.in_(wanted[start : start + _BATCH]))
                    for start in range(0, len(wanted), _BATCH)
                ]
                if open_anywhere:
                    queries.append(query.where(findings.c.resolved_at.is_(None)))
            for chunk_query in queries:
                result = await connection.stream(chunk_query)
                async for rows in result.mappings().partitions(_BATCH):
                    loaded.update((r.key, r) for r in map(record_from_row, rows))
        return loaded

    @_translated
    async def list_findings(self, *, include_resolved: bool = False) -> list[FindingRecord]:
        """Open findings (and resolved ones too if asked), by address, port and protocol."""
        query = select(findings)
        if not include_resolved:
            query = query.where(findings.c.resolved_at.is_(None))
        async with self._reader.connect() as connection:
            rows = (await connection.execute(query)).mappings()
            records = [record_from_row(row) for row in rows]
        return sorted(records, key=_order)

    @asynccontextmanager
    async def committing(
        self,
        *,
        run_id: str,
        started_at: datetime,
        upserts: Sequence[FindingRecord],
        still_pending: Collection[int] = (),
        latent: Sequence[LatentRecord] | None = None,
        latent_told: Collection[str] = (),
        changes: Sequence[StatusChange] = (),
    ) -> AsyncIterator[OutboxWriter]:
        """One transaction for a tick: its findings, then whatever messages the block adds
        (`OutboxWriter.add`, as many times as it likes), all or nothing. `stored` holds the
        references once the block has left. What `commit_tick` says holds for each part.
        `latent` (unless None) replaces the stored latent exposures; `latent_told` are the
        recipient keys whose mails this tick list them; `changes` go to the findings' history
        (goalkeeper.state.history)."""
        with _translating("committing"):
            async with self._writing(verify=True) as connection:
                await require_pending(connection, still_pending)
                run = self._insert(runs).values(run_id=run_id, started_at=started_at)
                await connection.execute(run.on_conflict_do_nothing(index_elements=["run_id"]))
                upsert = self._upsert_findings()
                # One order for every writer of findings rows (see mark_sent): PostgreSQL then
                # never sees two transactions lock the same rows in opposite orders (a deadlock).
                upserts = sorted(upserts, key=lambda r: r.key)
                for start in range(0, len(upserts), _BATCH):
                    # Batches, because SQLAlchemy prepares every row's parameters on the event
                    # loop: 100,000 rows at once would stall the probes for seconds.
                    batch = [finding_row(r) for r in upserts[start : start + _BATCH]]
                    await connection.execute(upsert, batch)
                await write_changes(connection, changes)
                if latent is not None:
                    await replace_latent(connection, run_id=run_id, records=latent)
                await mark_told(connection, self._insert, keys=latent_told, at=started_at)
                writer = OutboxWriter(
                    connection, self._insert, run_id=run_id, created_at=started_at
                )
                yield writer
                await writer.finish()
                crash_point("commit")  # test-only, inert in production (goalkeeper.crashpoints)
            await self._confirm(select(runs.c.run_id).where(runs.c.run_id == run_id), run_id)

    async def commit_tick(
        self,
        *,
        run_id: str,
        started_at: datetime,
        upserts: Sequence[FindingRecord],
        messages: Iterable[NewMessage],
        still_pending: Collection[int] = (),
    ) -> list[OutboxMessage]:
        """Write a tick's findings and every message it will send, all or nothing.

        A new e-mail replaces any pending one of an earlier run to the same `recipient_key`: that
        one is marked "superseded" (kept, never sent), in the same transaction, so a crash can
        never leave both to be sent. Telegram summaries each describe their own run: none is
        superseded.

        `still_pending`: ids of waiting mails the caller's plan relied on (`waiting_mails`). If
        one was sent since, the commit writes nothing and raises OutboxChanged. The check and
        the writes are one transaction, which a mark_sent cannot interleave with.

        Idempotent: a retried commit of the same run rewrites the same findings and keeps the
        messages already stored under (run, channel, recipient_key), whatever their status. The
        messages are stored as created at `started_at`, the tick's time, which is also what
        their findings' `last_notified_at` becomes once sent.

        `messages` is consumed once, a chunk at a time, inside the transaction: a generator
        that renders each mail as it is asked for never has every payload alive at once.
        Returns references to the stored messages for the keys given, oldest first:
        everything but the payload (`OutboxMessage.loaded` is False); `message(id)` reads it.
        """
        async with self.committing(
            run_id=run_id, started_at=started_at, upserts=upserts, still_pending=still_pending
        ) as writer:
            await writer.add(messages)
        return writer.stored

    @_translated
    async def reroute(
        self, ref: MessageRef, replacements: Iterable[NewMessage], *, reason: str, now: datetime
    ) -> list[OutboxMessage]:
        """Replace a pending mail with others of its run (for the current owners of the
        addresses it tells about), in one transaction: the original is marked failed with
        `reason` and never sent; the replacements are stored as created when it was, under the
        supersede rule of `commit_tick`. Returns their references; [] (nothing written) when
        the original is no longer pending (sent, superseded or failed meanwhile)."""
        async with self._writing(verify=True) as connection:
            marked = await connection.execute(
                update(outbox)
                .where(_match(ref), outbox.c.status == "pending")
                .values(
                    status="failed",
                    last_error=reason,
                    failed_at=now,
                    last_attempt_at=now,
                    attempts=outbox.c.attempts + 1,
                )
                .returning(outbox.c.run_id, outbox.c.created_at)
            )
            original = marked.first()
            if original is None:
                return []
            writer = OutboxWriter(
                connection, self._insert, run_id=original.run_id, created_at=original.created_at
            )
            await writer.add(replacements)
            return await writer.finish()

    @_translated
    async def finish_run(
        self,
        run_id: str,
        *,
        finished_at: datetime,
        summary: Mapping[str, Any],
        started_at: datetime | None = None,
        stats: TickStats | None = None,
    ) -> None:
        """Record how a run ended; a run that never committed is recorded here first.

        `summary` is free-form; `TickRecord.summary()` is what the pipeline stores, so that a
        restarted daemon can read the last tick back (`last_ticks`). `stats`, in the same
        transaction, is what the staff console charts and lists.
        """
        values = {"finished_at": finished_at, "summary": dict(summary)}
        statement = self._insert(runs).values(
            run_id=run_id, started_at=started_at or finished_at, **values
        )
        statement = statement.on_conflict_do_update(index_elements=["run_id"], set_=values)
        async with self._writing(verify=True) as connection:
            await connection.execute(statement)
            if stats is not None:
                await write_stats(connection, self._insert, stats)
        await self._confirm(select(runs.c.finished_at).where(runs.c.run_id == run_id), finished_at)

    @_translated
    async def load_latent(self) -> list[LatentRecord]:
        """The latent exposures the last committed tick saw."""
        async with self._reader.connect() as connection:
            return await read_latent(connection)

    @_translated
    async def latent_told(self) -> dict[str, datetime]:
        """When each recipient key was last sent its latent exposures."""
        async with self._reader.connect() as connection:
            return await read_told(connection)

    @_translated
    async def previous_run_start(self, before: datetime) -> datetime | None:
        """When the last run that started before `before` started (for "failed since")."""
        query = select(func.max(runs.c.started_at)).where(runs.c.started_at < before)
        async with self._reader.connect() as connection:
            value = (await connection.execute(query)).scalar_one_or_none()
        return value if isinstance(value, datetime) else None

    @_translated
    async def pending(
        self, channel: Channel | None = None, limit: int | None = None
    ) -> list[OutboxMessage]:
        """Messages still to send, oldest first."""
        query = select(outbox).where(outbox.c.status == "pending").order_by(outbox.c.id)
        if channel is not None:
            query = query.where(outbox.c.channel == channel)
        return await self._messages(query.limit(limit))

    @_translated
    async def failed_since(self, when: datetime) -> list[OutboxMessage]:
        """Messages given up on at or after `when`, for the ops summary."""
        query = select(outbox).where(outbox.c.status == "failed", outbox.c.failed_at >= when)
        return await self._messages(query.order_by(outbox.c.failed_at, outbox.c.id))

    @_translated
    async def failed(
        self, *, channel: Channel | None = None, ids: Collection[int] | None = None
    ) -> list[OutboxMessage]:
        """Every message given up on (of `channel`, among `ids`), oldest first."""
        query = select(outbox).where(outbox.c.status == "failed").order_by(outbox.c.id)
        if channel is not None:
            query = query.where(outbox.c.channel == channel)
        if ids is not None:
            query = query.where(outbox.c.id.in_(sorted(ids)))
        return await self._messages(query)

    @_translated
    async def requeue(self, ids: Collection[int]) -> list[int]:
        """Move failed messages back to pending with their attempts reset; the ids moved. The
        last error stays, so the outbox still shows why each one had failed."""
        if not ids:
            return []
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(outbox)
                .where(outbox.c.id.in_(sorted(ids)), outbox.c.status == "failed")
                .values(status="pending", attempts=0, failed_at=None)
                .returning(outbox.c.id)
            )
            return sorted(int(row[0]) for row in result)

    @_translated
    async def message(self, ref: MessageRef) -> OutboxMessage | None:
        found = await self._messages(select(outbox).where(_match(ref)))
        return found[0] if found else None

    @_translated
    async def mark_sent(self, ref: MessageRef, *, now: datetime) -> bool:
        """Mark a message sent and count it on the findings it told about.

        Returns False when it was sent already (a repeat after a crash counts once) or is
        unknown. The caller
        should shield this from cancellation: a mail sent but not marked is sent again.
        """
        async with self._writing() as connection:
            marked = await connection.execute(
                update(outbox)
                .where(_match(ref), outbox.c.status != "sent")
                .values(status="sent", sent_at=now)
                .returning(outbox.c.finding_keys, outbox.c.created_at)
            )
            row = marked.first()
            if row is None:
                return False
            keys = sorted(parse_keys(row.finding_keys))  # the order commit_tick writes in
            if keys:
                await connection.execute(_count_notified(), _key_params(keys, row.created_at))
        return True

    @_translated
    async def mark_failed(self, ref: MessageRef, *, reason: str, now: datetime) -> bool:
        """Give up on a pending message (a permanent failure); False if it was not pending."""
        return await self._update_pending(
            ref, status="failed", last_error=reason, failed_at=now, last_attempt_at=now
        )

    @_translated
    async def record_attempt(self, ref: MessageRef, *, error: str, now: datetime) -> int | None:
        """Count a temporary failure; the message stays pending. Returns the attempts so far."""
        async with self._writing() as connection:
            result = await connection.execute(
                update(outbox)
                .where(_match(ref), outbox.c.status == "pending")
                .values(attempts=outbox.c.attempts + 1, last_error=error, last_attempt_at=now)
                .returning(outbox.c.attempts)
            )
            attempts = result.scalar_one_or_none()
        return None if attempts is None else int(attempts)

    @asynccontextmanager
    async def _writing(self, *, verify: bool = False) -> AsyncIterator[AsyncConnection]:
        """A write transaction; with `verify`, refused when the path no longer names our file."""
        if verify and self._watch is not None and (problem := self._watch.problem()):
            raise StateError(problem)
        self._writes += 1
        try:
            async with self._engine.begin() as connection:
                yield connection
        finally:
            self._writes -= 1

    async def _confirm(self, query: Any, expected: object = ANY) -> None:
        """SQLite: raise StateError unless a new connection reads back what was committed."""
        if self._watch is not None:
            try:
                await self._watch.confirm(query, expected)
            except HealthError as err:
                raise StateError(str(err)) from err

    @_translated
    async def record_parts_sent(self, ref: MessageRef, count: int) -> None:
        """Note that the first `count` parts of a pending message were accepted. The caller
        should shield this: a part accepted but not noted is posted again."""
        async with self._writing() as connection:
            await connection.execute(
                update(outbox)
                .where(_match(ref), outbox.c.status == "pending")
                .values(parts_sent=count)
            )

    @_translated
    async def waiting_mails(self) -> dict[int, tuple[FindingKey, ...]]:
        """Pending (unsent) e-mails by id, with the findings each tells about: what the
        lifecycle's `pending` is made of, and what commit_tick's `still_pending` checks."""
        query = select(outbox.c.id, outbox.c.finding_keys).where(
            outbox.c.status == "pending", outbox.c.channel == "email"
        )
        waiting: dict[int, tuple[FindingKey, ...]] = {}
        async with self._reader.connect() as connection:
            result = await connection.stream(query)
            async for rows in result.partitions(_BATCH):
                waiting.update((row.id, parse_keys(row.finding_keys)) for row in rows)
        return waiting

    async def _update_pending(self, ref: MessageRef, **values: Any) -> bool:
        values["attempts"] = outbox.c.attempts + 1
        async with self._writing() as connection:
            result = await connection.execute(
                update(outbox)
                .where(_match(ref), outbox.c.status == "pending")
                .values(**values)
                .returning(outbox.c.id)
            )
            return result.first() is not None

    async def _messages(self, query: Any) -> list[OutboxMessage]:
        async with self._reader.connect() as connection:
            result = await connection.execute(query)
            return [message_from_row(row) for row in result.mappings()]

    def _upsert_findings(self) -> Any:
        statement = self._insert(findings)
        keep = (*_KEY_COLUMNS, *_NOTIFY_COLUMNS)
        return statement.on_conflict_do_update(
            index_elements=list(_KEY_COLUMNS),
            set_={c.name: statement.excluded[c.name] for c in findings.c if c.name not in keep},
        )


def _count_notified() -> Any:
    planned = bindparam("planned", type_=UtcDateTime())
    last = findings.c.last_notified_at
    return (
        update(findings)
        .where(
            findings.c.address == bindparam("k_address"),
            findings.c.port == bindparam("k_port"),
            findings.c.protocol == bindparam("k_protocol"),
        )
        .values(
            times_notified=findings.c.times_notified + 1,
            notified_grade=findings.c.grade,  # what the owner now knows of it
            # Never backwards: an old message delivered late does not reset the cadence.
            last_notified_at=case((or_(last.is_(None), last < planned), planned), else_=last),
        )
    )


def _key_params(keys: Iterable[FindingKey], planned: datetime) -> list[dict[str, Any]]:
    return [
        {"k_address": a, "k_port": p, "k_protocol": proto, "planned": planned}
        for a, p, proto in keys
    ]


def _match(ref: MessageRef) -> ColumnElement[bool]:
    if isinstance(ref, int):
        return outbox.c.id == ref
    return outbox.c.message_id == ref


def _order(record: FindingRecord) -> tuple[int, int, int, str]:
    return (record.address.version, int(record.address), record.port, str(record.protocol))
