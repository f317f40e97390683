"""Evidence: the grade each finding's owner was last told, so a worse one is news at once.

Revision ID: 0008_evidence
Revises: 0007_console
Create Date: 2026-12-02

Service verification (DESIGN §7) fills the existing `grade` and `evidence` columns. The new
`notified_grade` is written when a mail about the finding is sent; nullable: rows stored
before it fall back to their stored grade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_evidence"
down_revision = "0007_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.add_column(sa.Column("notified_grade", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("findings") as batch:
        batch.drop_column("notified_grade")
