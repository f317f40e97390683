"""What every simulated API offers its tests: requests counted by path, and injected faults.

A fault makes a path answer with an HTTP status instead, or (STALL) not answer at all until
`release()`, so that a client's timeout can be tested; the simulator releases its stalls when
it closes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STALL = 0  # a fault that never answers: for timeouts


class Faults:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.faults: dict[str, int] = {}  # path -> the HTTP status it answers instead, or STALL
        self._released = asyncio.Event()

    def release(self) -> None:
        """Let every stalled request end, so that the server can close."""
        self._released.set()

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())

    async def injected(self, path: str) -> int | None:
        """The status `path` answers with instead of its own (503 once a stall is released),
        or None when it has no fault."""
        if self.faults.get(path) == STALL:
            await self._released.wait()  # the client gives up first; close() ends the wait
            return 503
        return self.faults.get(path)
