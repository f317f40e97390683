"""Outbox: how many parts of a multi-part Telegram message were already accepted.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A summary too long for one Telegram message goes out as several; when one fails half way, the
retry starts from the first part not yet accepted instead of posting the first ones again.
Existing rows get 0 (nothing recorded as accepted): the old behaviour, nothing lost.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(
            sa.Column("parts_sent", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("parts_sent")
