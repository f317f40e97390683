"""Writing messages into the outbox inside a transaction someone else opened and closes.

A tick's commit (`StateStore.committing`) and a mail replaced at send time (`StateStore.reroute`)
both write messages the same way: a chunk at a time, then the supersede rule, then references
to what was stored. This module gets the connection of that transaction; it never opens one,
and it decides nothing about what the messages say.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from goalkeeper.state.outbox import NewMessage, OutboxMessage
from goalkeeper.state.rows import message_row, reference_from_row
from goalkeeper.state.schema import outbox
from goalkeeper.state.supersede import supersede_pending

# Outbox rows per INSERT: a rendered mail is tens of KB, so this bounds what a tick holds at once.
MESSAGE_CHUNK = 100
# Everything a sender needs to find and route a message, without its (large) payload.
_REFERENCE_COLUMNS = tuple(c for c in outbox.c if c.name != "payload")


class OutboxWriter:
    """The messages of one run, written within the caller's transaction.

    `add` may be called more than once (a tick adds its mails, then the summary made of their
    outcomes); `finish` applies the supersede rule to everything added and sets `stored`.
    """

    def __init__(
        self, connection: AsyncConnection, insert: Any, *, run_id: str, created_at: datetime
    ) -> None:
        self._connection = connection
        self._statement = insert(outbox).on_conflict_do_nothing(
            index_elements=["run_id", "channel", "recipient_key"]
        )
        self._run_id = run_id
        self._created_at = created_at
        self._wanted: set[tuple[str, str]] = set()
        self.stored: list[OutboxMessage] = []

    async def add(self, messages: Iterable[NewMessage]) -> None:
        """Store these messages, taking `MESSAGE_CHUNK` at a time from the iterable: one that
        renders each mail as it is asked for never has every payload alive at once."""
        pending = iter(messages)
        while chunk := list(itertools.islice(pending, MESSAGE_CHUNK)):
            self._wanted.update((m.channel, m.recipient_key) for m in chunk)
            rows = [message_row(self._run_id, self._created_at, m) for m in chunk]
            del chunk  # the rendered payloads: only their JSON rows stay, until executed
            await self._connection.execute(self._statement, rows)
            del rows  # before the next chunk is rendered, not after

    async def finish(self) -> list[OutboxMessage]:
        """Supersede earlier pending mails to the same recipients; references to what was
        added (everything but the payload), oldest first."""
        emails = {key for channel, key in self._wanted if channel == "email"}
        await supersede_pending(self._connection, self._run_id, emails)
        result = await self._connection.execute(
            select(*_REFERENCE_COLUMNS).where(outbox.c.run_id == self._run_id).order_by(outbox.c.id)
        )
        stored = (reference_from_row(row) for row in result.mappings())
        self.stored = [m for m in stored if (m.channel, m.recipient_key) in self._wanted]
        return self.stored
