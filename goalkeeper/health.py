"""What /healthz and /readyz read: a few flags the daemon sets, and two readings it lends.

Liveness never calls OpenStack or the store: it reads the schedule and how long the tick has
run. Readiness is a separate answer: started, not stopping, and the store wrote and read back a
heartbeat now. The clocks are the daemon's, passed in; this object decides nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from goalkeeper.aio import Clock

Monotonic = Callable[[], float]


class ScheduleView(Protocol):
    @property
    def running(self) -> bool: ...

    def next_run_time(self) -> datetime | None: ...

    def overdue(self, now: datetime) -> float | None: ...  # seconds late, when too late


class StoreCheck(Protocol):
    problem: str | None  # the last answer: why the store is not usable, or None

    async def check(self) -> str | None: ...


class Health:
    def __init__(
        self,
        *,
        schedule: ScheduleView,
        store: StoreCheck,
        max_tick_seconds: Callable[[], float],  # read at each probe: a reload may change it
        clock: Clock,
        monotonic: Monotonic,
    ) -> None:
        self._schedule = schedule
        self._store = store
        self._clock = clock
        self._monotonic = monotonic
        self._max_tick_seconds = max_tick_seconds
        self.started = False
        self.shutting_down = False
        self._tick_since: float | None = None

    def tick_started(self) -> None:
        self._tick_since = self._monotonic()

    def tick_ended(self) -> None:
        self._tick_since = None

    @property
    def tick_running(self) -> bool:
        return self._tick_since is not None

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        problems = []
        if not self._schedule.running:
            problems.append("scheduler not running")
        since = self._tick_since
        running_for = self._monotonic() - since if since is not None else None
        if running_for is not None and running_for > self._max_tick_seconds():
            problems.append(f"tick running for {running_for:.0f} s")
        next_run = self._schedule.next_run_time()
        late = self._schedule.overdue(self._clock())
        if late is not None:
            problems.append(f"scheduled tick overdue by {late:.0f} s")
        details: dict[str, Any] = {
            "tick_running": running_for is not None,
            "next_tick": str(next_run) if next_run else None,
        }
        if problems:
            details["problems"] = problems
        return not problems, details

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        if self.shutting_down:  # the store is about to close: the last answer stands
            problem = self._store.problem
        else:
            problem = await self._store.check()
        ok = self.started and not self.shutting_down and problem is None
        details: dict[str, Any] = {"shutting_down": self.shutting_down, "started": self.started,
                                   "state_store": problem is None}  # fmt: skip
        if problem is not None:
            details["state_store_problem"] = problem
        return ok, details
