"""The staff console: each tick's counts (tick_stats), every status change of a finding
(finding_events), and indexes for its findings filters.

Revision ID: 0007_console
Revises: 0006
Create Date: 2026-12-02

Two new tables and two indexes; nothing stored before is touched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_console"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_findings_owner_email", "findings", ["owner_email"])
    op.create_index("ix_findings_service", "findings", ["service"])
    op.create_table(
        "tick_stats",
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("targets", sa.Integer(), nullable=False),
        sa.Column("hosts_scanned", sa.Integer(), nullable=False),
        sa.Column("open_findings", sa.Integer(), nullable=False),
        sa.Column("by_service", sa.JSON(), nullable=False),
        sa.Column("by_grade", sa.JSON(), nullable=False),
        sa.Column("not_scanned", sa.Integer(), nullable=False),
        sa.Column("not_scanned_why", sa.JSON(), nullable=False),
        sa.Column("mails_sent", sa.Integer(), nullable=False),
        sa.Column("mails_failed", sa.Integer(), nullable=False),
        sa.Column("mails_queued", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name="fk_tick_stats_run_id_runs"),
        sa.PrimaryKeyConstraint("run_id", name="pk_tick_stats"),
    )
    op.create_index("ix_tick_stats_finished_at", "tick_stats", ["finished_at"])
    op.create_table(
        "finding_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(45), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("previous", sa.String(16), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_finding_events"),
    )
    op.create_index(
        "ix_finding_events_address_port_protocol_at",
        "finding_events",
        ["address", "port", "protocol", "at"],
    )


def downgrade() -> None:
    op.drop_index("ix_finding_events_address_port_protocol_at", table_name="finding_events")
    op.drop_table("finding_events")
    op.drop_index("ix_tick_stats_finished_at", table_name="tick_stats")
    op.drop_table("tick_stats")
    op.drop_index("ix_findings_service", table_name="findings")
    op.drop_index("ix_findings_owner_email", table_name="findings")
