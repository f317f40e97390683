"""Heartbeats: the row readiness writes and reads back to prove the store can be written.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

An upgrade never loses stored data: add tables and columns (nullable, or with a server
default), copy before you drop, and never drop in the same release that stops writing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        sa.Column("writer", sa.String(64), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("writer", name="pk_heartbeats"),
    )


def downgrade() -> None:
    op.drop_table("heartbeats")
