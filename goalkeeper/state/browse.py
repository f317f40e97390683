"""The staff console's reads (DESIGN §10): findings filtered, sorted and paged, one finding and
the messages about it, owners, the outbox's waiting messages, ticks and the trend.

Read-only: every query runs on the store's read-only engine, so a page can never write, and on
SQLite it reads a snapshot beside a running tick. Filters use the findings indexes (resolved_at,
service, owner_email); pages are LIMIT/OFFSET on an order ending in the primary key, so a page
is stable. Nothing here decides what a page shows; goalkeeper.console shapes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from goalkeeper.lifecycle import FindingKey, FindingRecord
from goalkeeper.state.errors import translated
from goalkeeper.state.history import StatusChange, read_changes
from goalkeeper.state.outbox import OutboxMessage
from goalkeeper.state.rows import message_from_row, record_from_row, reference_from_row
from goalkeeper.state.schema import findings, outbox, tick_stats
from goalkeeper.state.tickstats import NO_GRADE, TickStats

StatusFilter = Literal["current", "open", "acknowledged", "unmonitored", "resolved", "all"]
STATUSES: tuple[StatusFilter, ...] = (
    "current", "open", "acknowledged", "unmonitored", "resolved", "all"
)  # fmt: skip
SORTS = {
    "address": findings.c.address,
    "port": findings.c.port,
    "service": findings.c.service,
    "owner": findings.c.owner_email,
    "grade": findings.c.grade,
    "first_seen": findings.c.first_seen,
    "last_seen": findings.c.last_seen,
}
_KEY = (findings.c.address, findings.c.port, findings.c.protocol)
_PARTITION = 1_000  # rows per fetch of an export
MESSAGES_SHOWN = 200  # of one finding, of the outbox: the newest


@dataclass(frozen=True, slots=True)
class FindingQuery:
    """The findings page's filters and order. Empty strings mean "any"."""

    owner: str = ""  # part of the owner's address or name, or the project's name or id
    service: str = ""
    grade: str = ""  # NO_GRADE: findings without one
    status: StatusFilter = "current"
    address: str = ""  # the start of the address
    sort: str = "last_seen"
    descending: bool = True


@dataclass(frozen=True, slots=True)
class OwnerRow:
    """One owner's open findings and the newest mail to them."""

    email: str | None
    name: str | None
    projects: int
    open_findings: int
    last_mail: OutboxMessage | None


@dataclass(frozen=True, slots=True)
class OpenCounts:
    by_service: Mapping[str, int]
    by_grade: Mapping[str, int]  # NO_GRADE: without a grade
    by_status: Mapping[str, int]


class Browse:
    """The console's queries, on the store's read-only engine (`StateStore.browse`)."""

    def __init__(self, reader: AsyncEngine) -> None:
        self._reader = reader

    @translated
    async def findings_page(
        self, query: FindingQuery, *, offset: int, limit: int
    ) -> tuple[int, list[FindingRecord]]:
        """How many findings match, and the page of them from `offset`."""
        where = _where(query)
        count = select(func.count()).select_from(findings).where(where)
        page = _ordered(select(findings).where(where), query).offset(offset).limit(limit)
        async with self._reader.connect() as connection:
            total = int((await connection.execute(count)).scalar_one())
            rows = (await connection.execute(page)).mappings()
            return total, [record_from_row(row) for row in rows]

    async def findings_all(self, query: FindingQuery) -> AsyncIterator[FindingRecord]:
        """Every matching finding in order, a partition at a time (for the exports)."""
        statement = _ordered(select(findings).where(_where(query)), query)
        async with self._reader.connect() as connection:
            result = await connection.stream(statement)
            async for rows in result.mappings().partitions(_PARTITION):
                for row in rows:
                    yield record_from_row(row)

    @translated
    async def finding(self, key: FindingKey) -> FindingRecord | None:
        address, port, protocol = key
        statement = select(findings).where(
            findings.c.address == address,
            findings.c.port == port,
            findings.c.protocol == protocol,
        )
        async with self._reader.connect() as connection:
            row = (await connection.execute(statement)).mappings().first()
        return record_from_row(row) if row is not None else None

    @translated
    async def changes(self, key: FindingKey) -> list[StatusChange]:
        """The finding's status changes, oldest first."""
        async with self._reader.connect() as connection:
            return await read_changes(connection, key)

    @translated
    async def messages_about(self, key: FindingKey) -> list[OutboxMessage]:
        """Every message (newest first) whose finding keys hold `key`, with its payload.

        `finding_keys` is the JSON list NewMessage.keys_json wrote, so the key's own JSON text
        is a substring of it. Not indexed: a finding's page is opened one at a time, and the
        outbox holds a message per owner per tick."""
        needle = json.dumps(list(key))
        statement = (
            select(outbox)
            .where(outbox.c.finding_keys.contains(needle, autoescape=True))
            .order_by(outbox.c.id.desc())
            .limit(MESSAGES_SHOWN)
        )
        async with self._reader.connect() as connection:
            rows = (await connection.execute(statement)).mappings()
            return [message_from_row(row) for row in rows]

    @translated
    async def open_counts(self) -> OpenCounts:
        """Open findings (not resolved) by service, by grade and by status: three GROUP BYs."""
        current = findings.c.resolved_at.is_(None)
        status = _status_column()
        async with self._reader.connect() as connection:
            counts = []
            for column in (findings.c.service, findings.c.grade, status):
                grouped = select(column, func.count()).where(current).group_by(column)
                rows = (await connection.execute(grouped)).all()
                counts.append({str(k if k is not None else NO_GRADE): int(n) for k, n in rows})
        return OpenCounts(by_service=counts[0], by_grade=counts[1], by_status=counts[2])

    @translated
    async def ticks(self, *, offset: int = 0, limit: int = 20) -> list[TickStats]:
        """Finished ticks, newest first."""
        statement = (
            select(tick_stats)
            .order_by(tick_stats.c.finished_at.desc(), tick_stats.c.run_id)
            .offset(offset)
            .limit(limit)
        )
        async with self._reader.connect() as connection:
            return [
                TickStats.from_row(row) for row in (await connection.execute(statement)).mappings()
            ]

    @translated
    async def trend(self, since: datetime) -> list[tuple[datetime, int]]:
        """(finished_at, open findings) of every tick finished since `since`, oldest first."""
        statement = (
            select(tick_stats.c.finished_at, tick_stats.c.open_findings)
            .where(tick_stats.c.finished_at >= since)
            .order_by(tick_stats.c.finished_at)
        )
        async with self._reader.connect() as connection:
            return [(at, int(n)) for at, n in (await connection.execute(statement)).all()]

    @translated
    async def messages_of_runs(self, run_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per run: its messages by status now (mails queued at tick time are sent later)."""
        if not run_ids:
            return {}
        statement = (
            select(outbox.c.run_id, outbox.c.status, func.count())
            .where(outbox.c.run_id.in_(list(run_ids)))
            .group_by(outbox.c.run_id, outbox.c.status)
        )
        tally: dict[str, dict[str, int]] = {}
        async with self._reader.connect() as connection:
            for run_id, status, n in (await connection.execute(statement)).all():
                tally.setdefault(run_id, {})[status] = int(n)
        return tally

    @translated
    async def waiting(self) -> list[OutboxMessage]:
        """Pending and failed messages, newest first, without payloads."""
        columns = [c for c in outbox.c if c.name != "payload"]
        statement = (
            select(*columns)
            .where(outbox.c.status.in_(("pending", "failed")))
            .order_by(outbox.c.id.desc())
            .limit(MESSAGES_SHOWN)
        )
        async with self._reader.connect() as connection:
            rows = (await connection.execute(statement)).mappings()
            return [reference_from_row(row) for row in rows]

    @translated
    async def owners(self, *, offset: int = 0, limit: int = 100) -> tuple[int, list[OwnerRow]]:
        """Owners with open findings, most findings first, and the newest e-mail to each."""
        current = findings.c.resolved_at.is_(None)
        email, name = findings.c.owner_email, findings.c.owner_name
        grouped = select(
            email, name, func.count(findings.c.project_id.distinct()), func.count()
        ).where(current).group_by(email, name)  # fmt: skip
        total_query = select(func.count()).select_from(grouped.subquery())
        page = grouped.order_by(func.count().desc(), email, name).offset(offset).limit(limit)
        async with self._reader.connect() as connection:
            total = int((await connection.execute(total_query)).scalar_one())
            rows = (await connection.execute(page)).all()
            keys = sorted({e.lower() for e, *_ in rows if e})
            last = await _last_mails(connection, keys)
        owners = [
            OwnerRow(e, n, int(p), int(c), last.get(e.lower()) if e else None)
            for e, n, p, c in rows
        ]
        return total, owners


async def _last_mails(connection: Any, keys: list[str]) -> dict[str, OutboxMessage]:
    if not keys:
        return {}
    newest = (
        select(func.max(outbox.c.id))
        .where(outbox.c.channel == "email", outbox.c.recipient_key.in_(keys))
        .group_by(outbox.c.recipient_key)
    )
    columns = [c for c in outbox.c if c.name != "payload"]
    statement = select(*columns).where(outbox.c.id.in_(newest.scalar_subquery()))
    rows = (await connection.execute(statement)).mappings()
    return {row["recipient_key"]: reference_from_row(row) for row in rows}


def _status_column() -> ColumnElement[Any]:
    return case(
        (findings.c.resolved_at.is_not(None), "resolved"),
        (findings.c.unmonitored_reason.is_not(None), "unmonitored"),
        (findings.c.exception_source.is_not(None), "acknowledged"),
        else_="open",
    )


def _status_where(status: StatusFilter) -> ColumnElement[bool]:
    current = findings.c.resolved_at.is_(None)
    watched = findings.c.unmonitored_reason.is_(None)
    excepted = findings.c.exception_source.is_not(None)
    return {
        "current": current,
        "open": and_(current, watched, findings.c.exception_source.is_(None)),
        "acknowledged": and_(current, watched, excepted),
        "unmonitored": and_(current, findings.c.unmonitored_reason.is_not(None)),
        "resolved": findings.c.resolved_at.is_not(None),
        "all": true(),
    }[status]


def _where(query: FindingQuery) -> ColumnElement[bool]:
    conditions = [_status_where(query.status)]
    if query.service:
        conditions.append(findings.c.service == query.service)
    if query.grade == NO_GRADE:
        conditions.append(findings.c.grade.is_(None))
    elif query.grade:
        conditions.append(findings.c.grade == query.grade)
    if query.address:
        conditions.append(findings.c.address.startswith(query.address, autoescape=True))
    if query.owner:
        wanted = query.owner.lower()
        conditions.append(
            or_(
                *(
                    func.lower(column).contains(wanted, autoescape=True)
                    for column in (
                        findings.c.owner_email,
                        findings.c.owner_name,
                        findings.c.project_name,
                        findings.c.project_id,
                    )
                )
            )
        )
    return and_(*conditions)


def _ordered(statement: Select[Any], query: FindingQuery) -> Select[Any]:
    column = SORTS.get(query.sort, findings.c.last_seen)
    first = column.desc() if query.descending else column.asc()
    return statement.order_by(first, *_KEY)
