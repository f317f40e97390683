"""Initial schema: findings with their lifecycle, runs, and the outbox.

Revision ID: 0001
Revises:
Create Date: 2026-05-20

An upgrade never loses stored data: add tables and columns (nullable, or with a server
default), copy before you drop, and never drop in the same release that stops writing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "findings",
        sa.Column("address", sa.String(45), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("server_id", sa.String(255), nullable=False),
        sa.Column("server_name", sa.Text(), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("project_name", sa.Text(), nullable=False),
        sa.Column("owner_name", sa.Text(), nullable=True),
        sa.Column("owner_email", sa.Text(), nullable=True),
        sa.Column("owner_client_id", sa.String(255), nullable=True),
        sa.Column("first_seen", _utc(), nullable=False),
        sa.Column("last_seen", _utc(), nullable=False),
        sa.Column("resolved_at", _utc(), nullable=True),
        sa.Column("reopened_at", _utc(), nullable=True),
        sa.Column("times_notified", sa.Integer(), nullable=False),
        sa.Column("last_notified_at", _utc(), nullable=True),
        sa.Column("grade", sa.String(64), nullable=True),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("address", "port", "protocol", name="pk_findings"),
    )
    op.create_index("ix_findings_resolved_at", "findings", ["resolved_at"])
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name="pk_runs"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("recipient_key", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("finding_keys", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("last_attempt_at", _utc(), nullable=True),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.Column("failed_at", _utc(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_outbox_run_id_runs"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("message_id", name="uq_outbox_message_id"),
        sa.UniqueConstraint(
            "run_id", "channel", "recipient_key", name="uq_outbox_run_id_channel_recipient_key"
        ),
    )
    op.create_index("ix_outbox_status_channel_id", "outbox", ["status", "channel", "id"])
    op.create_index("ix_outbox_failed_at", "outbox", ["failed_at"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("runs")
    op.drop_index("ix_findings_resolved_at", table_name="findings")
    op.drop_table("findings")
