"""Findings history and the outbox, persisted (SQLAlchemy async; SQLite default, PostgreSQL option).

The only package that imports SQLAlchemy, Alembic and the database drivers. It stores what
goalkeeper.lifecycle decides and what the pipeline renders; it never scans, renders or sends.
"""

from goalkeeper.state.commit import MESSAGE_CHUNK, OutboxWriter
from goalkeeper.state.latent import LatentRecord
from goalkeeper.state.outbox import Channel, NewMessage, OutboxMessage, Status
from goalkeeper.state.records import LastTicks, OutboxTally, TickRecord
from goalkeeper.state.store import MessageRef, StateError, StateStore, StateUnavailable
from goalkeeper.state.supersede import OutboxChanged

__all__ = [
    "MESSAGE_CHUNK",
    "Channel",
    "LastTicks",
    "LatentRecord",
    "MessageRef",
    "NewMessage",
    "OutboxChanged",
    "OutboxMessage",
    "OutboxTally",
    "OutboxWriter",
    "StateError",
    "StateStore",
    "StateUnavailable",
    "Status",
    "TickRecord",
]
