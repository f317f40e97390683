"""Alembic environment for Goalkeeper's state store, driven only from goalkeeper.state.

The store opens a connection, begins a transaction and hands it over in
`config.attributes["connection"]`; this file runs the migrations on it and never makes a
connection, reads alembic.ini or configures logging of its own (the daemon owns logging).
SQLite cannot ALTER most things in place, so operations run in batch mode (copy and move),
which keeps the rows.

A new revision, from the repository root (it compares goalkeeper/state/schema.py with a scratch
database that is at head):

    python -c "from goalkeeper.state.migrate import new_revision; new_revision('what changed')"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("Goalkeeper's migrations run through goalkeeper.state, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=context.config.attributes.get("target_metadata"),
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
