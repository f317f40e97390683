"""Findings history and the outbox, persisted (SQLAlchemy async; SQLite default, PostgreSQL option).

The only package that imports SQLAlchemy, Alembic and the database drivers. It stores what
goalkeeper.lifecycle decides and what the pipeline renders; it never scans, renders or sends.
"""

from goalkeeper.state.browse import STATUSES, Browse, FindingQuery, OpenCounts, OwnerRow
from goalkeeper.state.commit import MESSAGE_CHUNK, OutboxWriter
from goalkeeper.state.errors import StateError, StateUnavailable
from goalkeeper.state.history import StatusChange, status_changes
from goalkeeper.state.latent import LatentRecord
from goalkeeper.state.outbox import Channel, NewMessage, OutboxMessage, Status
from goalkeeper.state.records import LastTicks, OutboxTally, TickRecord
from goalkeeper.state.store import MessageRef, StateStore
from goalkeeper.state.supersede import OutboxChanged
from goalkeeper.state.tickstats import NO_GRADE, TickStats

__all__ = [
    "MESSAGE_CHUNK",
    "NO_GRADE",
    "STATUSES",
    "Browse",
    "Channel",
    "FindingQuery",
    "LastTicks",
    "LatentRecord",
    "MessageRef",
    "NewMessage",
    "OpenCounts",
    "OutboxChanged",
    "OutboxMessage",
    "OutboxTally",
    "OutboxWriter",
    "OwnerRow",
    "StateError",
    "StateStore",
    "StateUnavailable",
    "Status",
    "StatusChange",
    "TickRecord",
    "TickStats",
    "status_changes",
]
