"""Findings acknowledged by an exception: whose, why, until when, since when.

Revision ID: 0005_u_exceptions
Revises: 0004
Create Date: 2026-12-02

A finding an exception covers (the customer's goalkeeper.allow, or the provider's config) is
kept open and marked acknowledged, with that exception's source and reason, its until (capped
at notify.max_exception_days), the until it asked for, and when it was first honoured (the cap
counts from then). All nullable: every stored row is a finding no exception covers, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_u_exceptions"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("exception_source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("exception_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("exception_until", sa.Date(), nullable=True))
        batch.add_column(sa.Column("exception_requested_until", sa.Date(), nullable=True))
        batch.add_column(sa.Column("acknowledged_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("acknowledged_since")
        batch.drop_column("exception_requested_until")
        batch.drop_column("exception_until")
        batch.drop_column("exception_reason")
        batch.drop_column("exception_source")
