"""Never twice: a tick's mail replaces a pending one to the same owner, and only if it is pending.

Two rules of commit_tick, kept apart from the store's other queries and each given the
connection of the commit's transaction: the pending e-mails of earlier runs to a recipient this
tick writes to are marked "superseded" (kept, never sent); and the waiting mails the tick's plan
counted on must still be waiting, or the commit is refused (OutboxChanged) and the tick decides
again. What a tick should say is goalkeeper.lifecycle's to decide, not this module's.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from goalkeeper.state.schema import outbox

SUPERSEDED_BY = "not sent: replaced by the mail of run "
_BATCH = 1_000  # ids or keys per IN (...)


class OutboxChanged(Exception):
    """A commit refused: mails it counted on as waiting were sent meanwhile (`sent`: their ids).
    Nothing was written; decide again from what the store says now."""

    def __init__(self, sent: Sequence[int]) -> None:
        super().__init__(f"{len(sent)} waiting messages were sent meanwhile")
        self.sent = list(sent)


async def supersede_pending(connection: AsyncConnection, run_id: str, keys: set[str]) -> None:
    """Mark superseded the pending e-mails of other runs to these recipient keys."""
    ordered = sorted(keys)
    for start in range(0, len(ordered), _BATCH):
        await connection.execute(
            update(outbox)
            .where(
                outbox.c.status == "pending",
                outbox.c.channel == "email",
                outbox.c.run_id != run_id,
                outbox.c.recipient_key.in_(ordered[start : start + _BATCH]),
            )
            .values(status="superseded", last_error=f"{SUPERSEDED_BY}{run_id}")
        )


async def require_pending(connection: AsyncConnection, ids: Collection[int]) -> None:
    """Raise OutboxChanged if any of these messages was sent (FOR UPDATE on PostgreSQL)."""
    ordered = sorted(ids)
    sent: list[int] = []
    for start in range(0, len(ordered), _BATCH):
        # FOR UPDATE (PostgreSQL): a mark_sent of these rows waits for this transaction.
        rows = await connection.execute(
            select(outbox.c.id, outbox.c.status)
            .where(outbox.c.id.in_(ordered[start : start + _BATCH]))
            .with_for_update()
        )
        sent.extend(row.id for row in rows if row.status == "sent")
    if sent:
        raise OutboxChanged(sent)
