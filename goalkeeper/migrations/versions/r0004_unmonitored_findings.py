"""Findings no longer monitored: since when, and why.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A finding that a tick did not look at (its port off the list, its protocol or host not
scanned, its address out of scope) is kept open and marked, never resolved: nothing false.
Both columns are nullable: every stored row is a monitored finding, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("unmonitored_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("unmonitored_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("unmonitored_reason")
        batch.drop_column("unmonitored_since")
