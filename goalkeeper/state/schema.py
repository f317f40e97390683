"""The tables the state store reads and writes, as SQLAlchemy Core objects.

This is the schema the queries are written against. An empty database is built from it
directly; an existing one is brought to it by the migrations in goalkeeper/migrations, and tests
check that both ways give the same tables. Changing a table here without a new migration
is a bug. Nothing here connects to a database.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

# Explicit constraint names: migrations can then alter them by name on both databases.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases.

    SQLite has no time zones: SQLAlchemy writes the wall-clock digits and reads back a naive
    value, silently. Storing UTC and re-attaching UTC on read keeps comparisons right; a naive
    value given to the store is a bug and is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the state store only takes timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


findings = Table(
    "findings",
    metadata,
    Column("address", String(45), primary_key=True),
    Column("port", Integer, primary_key=True),
    Column("protocol", String(8), primary_key=True),
    Column("service", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("evidence", Text, nullable=False),
    Column("server_id", String(255), nullable=False),
    Column("server_name", Text, nullable=False),
    Column("project_id", String(255), nullable=False),
    Column("project_name", Text, nullable=False),
    Column("owner_name", Text, nullable=True),
    Column("owner_email", Text, nullable=True),
    Column("owner_client_id", String(255), nullable=True),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    Column("reopened_at", UtcDateTime, nullable=True),
    Column("times_notified", Integer, nullable=False),
    Column("last_notified_at", UtcDateTime, nullable=True),
    Column("grade", String(64), nullable=True),
    Column("cause", Text, nullable=True),
    Column("unmonitored_since", UtcDateTime, nullable=True),
    Column("unmonitored_reason", Text, nullable=True),
    # The exception acknowledging it (DESIGN §9): whose, why, until (capped), asked-for until.
    Column("exception_source", String(16), nullable=True),
    Column("exception_reason", Text, nullable=True),
    Column("exception_until", Date, nullable=True),
    Column("exception_requested_until", Date, nullable=True),
    Column("acknowledged_since", UtcDateTime, nullable=True),
    # The grade when a mail about it was last sent: a worse grade since is news (DESIGN §7).
    Column("notified_grade", String(64), nullable=True),
    Index(None, "resolved_at"),
    # The staff console's filters (goalkeeper.state.browse): by owner and by service.
    Index(None, "owner_email"),
    Index(None, "service"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("summary", JSON, nullable=True),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(128), ForeignKey("runs.run_id"), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient", Text, nullable=False),
    Column("recipient_key", String(320), nullable=False),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("payload", Text, nullable=False),
    Column("finding_keys", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_attempt_at", UtcDateTime, nullable=True),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("failed_at", UtcDateTime, nullable=True),
    # Parts of a multi-part Telegram message already accepted: a retry goes on from the next.
    Column("parts_sent", Integer, nullable=False, server_default=text("0")),
    UniqueConstraint("run_id", "channel", "recipient_key"),
    Index(None, "status", "channel", "id"),
    Index(None, "failed_at"),
)

# One row per open store (a process): readiness writes a fresh token and reads it back, which a
# trivial SELECT never proves. Rows of processes gone for a day are deleted by the next write.
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("writer", String(64), primary_key=True),
    Column("token", String(64), nullable=False),
    Column("written_at", UtcDateTime, nullable=False),
)

# The last tick's latent exposures (DESIGN §8), replaced whole by each tick that commits: an
# advisory, never a finding, so none of the findings' history is kept for them.
latent_exposures = Table(
    "latent_exposures",
    metadata,
    Column("address", String(45), primary_key=True),
    Column("port", Integer, primary_key=True),
    Column("protocol", String(8), primary_key=True),
    Column("run_id", String(128), nullable=False),
    Column("recipient_key", String(320), nullable=False),
    Column("server_id", String(255), nullable=False),
    Column("server_name", Text, nullable=False),
    Column("project_id", String(255), nullable=False),
    Column("rules", Text, nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),
)

# When each recipient key was last sent a mail listing its latent exposures (alone or inside a
# report): the lone advisory waits notify.latent_days from then.
latent_notices = Table(
    "latent_notices",
    metadata,
    Column("recipient_key", String(320), primary_key=True),
    Column("told_at", UtcDateTime, nullable=False),
)

# What each finished tick counted, for the staff console's trend chart and tick list (DESIGN
# §10): one row per run, written with the run's record by `finish_run`. Counts as JSON objects
# (name -> number) so a new grade or reason needs no new column.
tick_stats = Table(
    "tick_stats",
    metadata,
    Column("run_id", String(128), ForeignKey("runs.run_id"), primary_key=True),
    Column("finished_at", UtcDateTime, nullable=False),
    Column("duration_seconds", Float, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("targets", Integer, nullable=False),
    Column("hosts_scanned", Integer, nullable=False),
    Column("open_findings", Integer, nullable=False),
    Column("by_service", JSON, nullable=False),
    Column("by_grade", JSON, nullable=False),
    Column("not_scanned", Integer, nullable=False),
    Column("not_scanned_why", JSON, nullable=False),  # address -> why, the first NOT_SCANNED_KEPT
    Column("mails_sent", Integer, nullable=False),
    Column("mails_failed", Integer, nullable=False),
    Column("mails_queued", Integer, nullable=False),
    Index(None, "finished_at"),
)

# Every status change of a finding (goalkeeper.state.history), written in the tick's commit:
# the findings table only holds where each stands now.
finding_events = Table(
    "finding_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address", String(45), nullable=False),
    Column("port", Integer, nullable=False),
    Column("protocol", String(8), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("run_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("previous", String(16), nullable=True),
    Column("detail", Text, nullable=False),
    Index(None, "address", "port", "protocol", "at"),
)
