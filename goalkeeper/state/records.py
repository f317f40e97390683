"""What the store keeps of each finished tick and of the outbox, for gauges that survive restarts.

A restarted daemon shows what the last tick found (targets, open findings, when a tick last
succeeded) and what still waits to be sent, read from the store instead of starting at zero.
The shape of a run's stored summary is defined here once: the pipeline writes it, the daemon
reads it back; the two queries that read them are here too, each given a connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from goalkeeper.state.outbox import CHANNELS, Channel
from goalkeeper.state.schema import outbox, runs

Outcome = Literal["success", "failure"]
OpenCount = tuple[str, int, str, str, int]  # (service, port, protocol, grade, count)
UNGRADED = "none"  # the grade of rows stored before verification (goalkeeper.findings.UNGRADED)


@dataclass(frozen=True, slots=True)
class TickRecord:
    """How a tick that reached the end went, as stored in `runs.summary`."""

    outcome: Outcome
    targets: int
    open_findings: tuple[OpenCount, ...]
    owners_unresolved: int
    # The owner lookup gauges (metrics.owner_gauges); a record older than them reads as no incident.
    owner_resolved_share: float = 1.0
    owner_lookup_incident: bool = False
    unmonitored: Mapping[str, int] = field(default_factory=dict)  # reason -> findings
    causes: Mapping[str, int] = field(default_factory=dict)  # open findings per cause kind
    acknowledged: Mapping[str, int] = field(default_factory=dict)  # per exception source

    def summary(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "targets": self.targets,
            "findings": sum(row[-1] for row in self.open_findings),
            "open_findings": [list(row) for row in self.open_findings],
            "owners_unresolved": self.owners_unresolved,
            "owner_resolved_share": self.owner_resolved_share,
            "owner_lookup_incident": self.owner_lookup_incident,
            "unmonitored": dict(self.unmonitored),
            "causes": dict(self.causes),
            "acknowledged": dict(self.acknowledged),
        }

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> TickRecord | None:
        """The record, or None for a summary written before records were kept (or unreadable)."""
        try:
            outcome = summary["outcome"]
            if outcome not in ("success", "failure"):
                return None
            return cls(
                outcome=outcome,
                targets=int(summary["targets"]),
                open_findings=tuple(_open_count(row) for row in summary["open_findings"]),
                owners_unresolved=int(summary["owners_unresolved"]),
                owner_resolved_share=float(summary.get("owner_resolved_share", 1.0)),
                owner_lookup_incident=summary.get("owner_lookup_incident") is True,
                # Not in records written before findings could be unmonitored: none then.
                unmonitored={
                    str(reason): int(n) for reason, n in summary.get("unmonitored", {}).items()
                },
                # Not in records written before causes were traced: none counted then.
                causes={str(kind): int(n) for kind, n in summary.get("causes", {}).items()},
                # Not in records written before exceptions: none acknowledged then.
                acknowledged={
                    str(source): int(n) for source, n in summary.get("acknowledged", {}).items()
                },
            )
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class LastTicks:
    """The newest finished tick with a record, and when the newest successful one finished."""

    last: TickRecord | None
    last_success_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxTally:
    """Per channel: messages still to send, the oldest one's creation, and messages given up."""

    channel: Channel
    pending: int
    oldest_pending_at: datetime | None
    failed: int


async def read_outbox_tally(connection: AsyncConnection) -> list[OutboxTally]:
    """One grouped query, served by the outbox index on (status, channel, id); only pending
    rows are read for their creation time, and those are few unless a channel is down."""
    query = (
        select(outbox.c.channel, outbox.c.status, func.count(), func.min(outbox.c.created_at))
        .where(outbox.c.status.in_(("pending", "failed")))
        .group_by(outbox.c.channel, outbox.c.status)
    )
    rows = (await connection.execute(query)).all()
    counts = {(channel, status): (count, oldest) for channel, status, count, oldest in rows}
    tally = []
    for channel in CHANNELS:
        pending, oldest = counts.get((channel, "pending"), (0, None))
        failed, _ = counts.get((channel, "failed"), (0, None))
        tally.append(OutboxTally(channel, int(pending), oldest, int(failed)))
    return tally


async def read_last_ticks(connection: AsyncConnection) -> LastTicks:
    outcome = runs.c.summary["outcome"].as_string()
    success = select(func.max(runs.c.finished_at)).where(outcome == "success")
    newest = (
        select(runs.c.summary)
        .where(runs.c.finished_at.is_not(None), outcome.is_not(None))
        .order_by(runs.c.finished_at.desc())
        .limit(1)
    )
    succeeded = (await connection.execute(success)).scalar_one_or_none()
    summary = (await connection.execute(newest)).scalar_one_or_none()
    return LastTicks(
        last=TickRecord.from_summary(summary) if isinstance(summary, Mapping) else None,
        last_success_at=succeeded if isinstance(succeeded, datetime) else None,
    )


def _open_count(row: Sequence[Any]) -> OpenCount:
    """A stored row; one written before grades were kept has four fields and no grade."""
    if len(row) == 4:
        service, port, protocol, count = row
        return (str(service), int(port), str(protocol), UNGRADED, int(count))
    service, port, protocol, grade, count = row
    return (str(service), int(port), str(protocol), str(grade), int(count))
