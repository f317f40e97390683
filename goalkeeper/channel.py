"""One notification channel's bounded queue of stored messages, and how to send one.

A full queue drops nothing (the message waits in the store). goalkeeper.delivery owns the
channels and runs their workers; a channel never calls back into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from goalkeeper.relay import RefusalStreak
from goalkeeper.state import Channel as ChannelName
from goalkeeper.state import OutboxMessage


class Channel:
    """One channel's bounded queue of messages and how to send them. Delivery owns the
    channels and runs their workers; a channel knows nothing of it."""

    def __init__(
        self,
        name: ChannelName,
        send: Callable[[OutboxMessage], Awaitable[None]],
        *,
        size: int,
        depth: Callable[[int], None],
    ) -> None:
        self.name = name
        self.send = send
        self._depth = depth  # told the queue's length whenever it changes
        self._queue: asyncio.Queue[OutboxMessage] = asyncio.Queue(size)
        self.refusals = RefusalStreak()

    def submit(self, message: OutboxMessage) -> bool:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        self._depth(self._queue.qsize())
        return True

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def join(self) -> None:
        await self._queue.join()

    async def take(self) -> OutboxMessage:
        """The next message; call `done` once it has been dealt with."""
        return await self._queue.get()

    def done(self) -> None:
        self._queue.task_done()
        self._depth(self._queue.qsize())

    def abandon(self) -> list[OutboxMessage]:
        """Forget what is queued (it stays pending in the store); return what that was."""
        dropped = []
        while not self._queue.empty():
            dropped.append(self._queue.get_nowait())
            self._queue.task_done()
        self._depth(self._queue.qsize())
        return dropped
