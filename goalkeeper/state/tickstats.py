"""Each finished tick's counts, kept for the staff console's trend chart and tick list.

`runs.summary` holds what a restarted daemon needs for its gauges; this holds what people look
back at: how many findings were open, where the targets went, what the mails did, how long it
took. One row per run, written by `StateStore.finish_run` in the run's own transaction. Values
only and the one statement that writes them; the console's readers are in state/browse.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from goalkeeper.model import TickReport
from goalkeeper.state.schema import tick_stats

# Addresses kept with their reason per tick: a cloud-wide outage can leave thousands unscanned,
# and the count (always exact) says how many more there were.
NOT_SCANNED_KEPT = 500
NO_GRADE = "none"  # the key of findings no grade was given to (Finding.grade is None)


@dataclass(frozen=True, slots=True)
class TickStats:
    run_id: str
    finished_at: datetime
    duration_seconds: float
    outcome: str  # success | failure, as TickRecord.outcome
    targets: int
    hosts_scanned: int
    by_service: Mapping[str, int] = field(default_factory=dict)  # open findings
    by_grade: Mapping[str, int] = field(default_factory=dict)  # open findings; NO_GRADE: none
    not_scanned: int = 0
    not_scanned_why: Mapping[str, str] = field(default_factory=dict)  # address -> why
    mails_sent: int = 0
    mails_failed: int = 0
    mails_queued: int = 0  # handed to the e-mail worker: sent (or not) after the tick

    @classmethod
    def of(cls, report: TickReport, *, outcome: str) -> TickStats:
        """What the console keeps of a finished tick's report."""
        return cls(
            run_id=report.run_id,
            finished_at=report.finished_at,
            duration_seconds=report.duration_seconds,
            outcome=outcome,
            targets=report.targets,
            hosts_scanned=report.hosts_scanned,
            by_service=dict(Counter(f.service for f in report.findings)),
            by_grade=dict(Counter(f.grade or NO_GRADE for f in report.findings)),
            not_scanned=len(report.not_scanned),
            not_scanned_why=dict(report.not_scanned),
            mails_sent=sum(1 for m in report.mails if m.delivered),
            mails_failed=sum(1 for m in report.mails if m.error and not m.queued),
            mails_queued=sum(1 for m in report.mails if m.queued),
        )

    @property
    def open_findings(self) -> int:
        return sum(self.by_service.values())

    def row(self) -> dict[str, Any]:
        kept = dict(list(self.not_scanned_why.items())[:NOT_SCANNED_KEPT])
        return {
            "run_id": self.run_id,
            "finished_at": self.finished_at,
            "duration_seconds": self.duration_seconds,
            "outcome": self.outcome,
            "targets": self.targets,
            "hosts_scanned": self.hosts_scanned,
            "open_findings": self.open_findings,
            "by_service": dict(self.by_service),
            "by_grade": dict(self.by_grade),
            "not_scanned": self.not_scanned,
            "not_scanned_why": kept,
            "mails_sent": self.mails_sent,
            "mails_failed": self.mails_failed,
            "mails_queued": self.mails_queued,
        }

    @classmethod
    def from_row(cls, row: RowMapping) -> TickStats:
        return cls(
            run_id=row["run_id"],
            finished_at=row["finished_at"],
            duration_seconds=float(row["duration_seconds"]),
            outcome=row["outcome"],
            targets=int(row["targets"]),
            hosts_scanned=int(row["hosts_scanned"]),
            by_service={str(k): int(v) for k, v in (row["by_service"] or {}).items()},
            by_grade={str(k): int(v) for k, v in (row["by_grade"] or {}).items()},
            not_scanned=int(row["not_scanned"]),
            not_scanned_why={str(k): str(v) for k, v in (row["not_scanned_why"] or {}).items()},
            mails_sent=int(row["mails_sent"]),
            mails_failed=int(row["mails_failed"]),
            mails_queued=int(row["mails_queued"]),
        )


async def write_stats(connection: AsyncConnection, insert: Any, stats: TickStats) -> None:
    """Insert or replace the run's row (a retried finish_run writes the same run again)."""
    row = stats.row()
    statement = insert(tick_stats).values(**row)
    changed = {k: v for k, v in row.items() if k != "run_id"}
    await connection.execute(
        statement.on_conflict_do_update(index_elements=["run_id"], set_=changed)
    )
