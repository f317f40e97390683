"""Latent exposures: the last tick's (replaced each tick) and when each owner was last told.

Revision ID: 0006
Revises: 0005_u_exceptions
Create Date: 2026-12-02

Two new tables; nothing stored before is touched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005_u_exceptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "latent_exposures",
        sa.Column("address", sa.String(45), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("recipient_key", sa.String(320), nullable=False),
        sa.Column("server_id", sa.String(255), nullable=False),
        sa.Column("server_name", sa.Text(), nullable=False),
        sa.Column("project_id", sa.String(255), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", "port", "protocol", name="pk_latent_exposures"),
    )
    op.create_table(
        "latent_notices",
        sa.Column("recipient_key", sa.String(320), nullable=False),
        sa.Column("told_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("recipient_key", name="pk_latent_notices"),
    )


def downgrade() -> None:
    op.drop_table("latent_notices")
    op.drop_table("latent_exposures")
