"""A stand-in for asyncio.sleep that remembers each delay (a backoff, a retry_after) and returns
at once, for the senders' retry tests."""

from __future__ import annotations


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
