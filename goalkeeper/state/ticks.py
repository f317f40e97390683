"""What the store keeps of each finished tick and of the outbox, for gauges that survive restarts.

A restarted daemon shows what the last tick found (targets, open findings, when a tick last
succeeded) and what still waits to be sent, read from the store instead of starting at zero.
The shape of a run's stored summary is defined here once: the pipeline writes it, the daemon
reads it back. Nothing here touches a connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from goalkeeper.state.messages import Channel

Outcome = Literal["success", "failure"]
OpenCount = tuple[str, int, str, int]  # (service, port, protocol, count)


@dataclass(frozen=True, slots=True)
class TickRecord:
    """How a tick that reached the end went, as stored in `runs.summary`."""

    outcome: Outcome
    targets: int
    open_findings: tuple[OpenCount, ...]
    owners_unresolved: int

    def summary(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "targets": self.targets,
            "findings": sum(row[3] for row in self.open_findings),
            "open_findings": [list(row) for row in self.open_findings],
            "owners_unresolved": self.owners_unresolved,
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
                open_findings=tuple(
                    (str(s), int(p), str(proto), int(n))
                    for s, p, proto, n in summary["open_findings"]
                ),
                owners_unresolved=int(summary["owners_unresolved"]),
            )
        except (KeyError, TypeError, ValueError):
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
