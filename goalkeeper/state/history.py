"""Every status change of a finding, kept for the staff console's finding page (DESIGN §10).

The findings table holds where each finding stands now (and the latest time of each kind of
change); this log holds each change as it happened: first seen, resolved, reopened, no longer
monitored and back, acknowledged and the exception's end. The tick works the changes out from
the records it loaded and the ones it writes (`status_changes`, pure), and they are written in
the tick's own transaction, so the log never tells of a change the findings do not hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from goalkeeper.lifecycle import FindingKey, FindingRecord
from goalkeeper.state.schema import finding_events

_BATCH = 1_000
EVENTS_SHOWN = 500  # of one finding, the newest: a daily flapping port for more than a year


@dataclass(frozen=True, slots=True)
class StatusChange:
    key: FindingKey
    at: datetime
    run_id: str
    status: str  # open, acknowledged, unmonitored or resolved (FindingStatus)
    previous: str | None  # None: first seen
    detail: str = ""  # why it is unmonitored, or whose exception acknowledges it and why


def status_changes(
    previous: Mapping[FindingKey, FindingRecord],
    upserts: Sequence[FindingRecord],
    *,
    run_id: str,
    at: datetime,
) -> list[StatusChange]:
    """The records among `upserts` whose status differs from what `previous` held."""
    changes = []
    for record in upserts:
        before = previous.get(record.key)
        old = str(before.status) if before is not None else None
        new = str(record.status)
        if old == new:
            continue
        detail = ""
        if record.unmonitored_reason is not None and record.is_open:
            detail = record.unmonitored_reason
        elif record.exception_source is not None and record.is_open:
            detail = f"{record.exception_source}: {record.exception_reason or ''}".rstrip(": ")
        changes.append(StatusChange(record.key, at, run_id, new, old, detail))
    return changes


async def write_changes(connection: AsyncConnection, changes: Sequence[StatusChange]) -> None:
    rows = [
        {
            "address": c.key[0],
            "port": c.key[1],
            "protocol": c.key[2],
            "at": c.at,
            "run_id": c.run_id,
            "status": c.status,
            "previous": c.previous,
            "detail": c.detail,
        }
        for c in changes
    ]
    for start in range(0, len(rows), _BATCH):
        await connection.execute(insert(finding_events), rows[start : start + _BATCH])


async def read_changes(connection: AsyncConnection, key: FindingKey) -> list[StatusChange]:
    """The finding's changes, oldest first (the newest EVENTS_SHOWN of them)."""
    address, port, protocol = key
    events = finding_events.c
    newest = (
        select(finding_events)
        .where(events.address == address, events.port == port, events.protocol == protocol)
        .order_by(events.at.desc(), events.id.desc())
        .limit(EVENTS_SHOWN)
    )
    rows = (await connection.execute(newest)).mappings().all()
    return [
        StatusChange(key, r["at"], r["run_id"], r["status"], r["previous"], r["detail"] or "")
        for r in reversed(rows)
    ]
