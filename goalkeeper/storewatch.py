"""The daemon's watch on its state store: is it usable, and what does it hold?

Counters and the queue depth live in the process and start from zero; the store does not. So
the gauges of pending and failed messages, and those of the last tick, are read from the store:
at start, after each tick, and every few seconds in the background, each time with one grouped
query bounded by a timeout. Never on a scrape: prometheus_client runs collectors synchronously,
on the event loop, and a scrape must not wait for a slow database. The same pass proves the
store can be written and read back (`StateStore.check`), as `/readyz` does on each probe, and
`goalkeeper_state_store_up` shows the latest answer. This module decides nothing about ticks or
delivery, and the time is the daemon's clock, passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from goalkeeper import logs
from goalkeeper.aio import Clock, utc_now
from goalkeeper.metrics import Metrics
from goalkeeper.state import LastTicks, OutboxTally, StateError, StateStore

log = logs.get_logger(__name__)
T = TypeVar("T")
NOT_CHECKED = "not checked yet"


class StoreWatch:
    def __init__(
        self,
        store: StateStore,
        metrics: Metrics,
        *,
        timeout: float,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._timeout = timeout
        self._clock = clock
        self.problem: str | None = NOT_CHECKED  # why the store is not usable, or None
        self._poked = asyncio.Event()

    async def check(self) -> str | None:
        """Write and read back a heartbeat; return why the store is not usable, or None."""
        problem: str | None = None
        try:
            await self._bounded(lambda: self._store.check(now=self._clock()))
        except StateError as err:
            problem = str(err)
        except TimeoutError:
            problem = f"the state store did not answer within {self._timeout:g} s"
        self._metrics.state_store_up.set(0 if problem else 1)
        if problem != self.problem:
            if problem is not None:
                log.error("state store not usable", problem=problem)
            elif self.problem != NOT_CHECKED:
                log.info("state store usable again")
        self.problem = problem
        return problem

    async def refresh(self) -> bool:
        """Set the outbox gauges from the store; False (gauges kept) when it cannot be read."""
        now = self._clock()
        try:
            tally: list[OutboxTally] = await self._bounded(self._store.outbox_tally)
        except (StateError, TimeoutError) as err:
            if self.problem is None:  # else check() has said why, once
                log.warning("cannot read the outbox for its gauges", error=str(err) or "timeout")
            return False
        metrics = self._metrics
        for row in tally:
            age = 0.0
            if row.oldest_pending_at is not None:
                age = max(0.0, (now - row.oldest_pending_at).total_seconds())
            metrics.outbox_pending.labels(channel=row.channel).set(row.pending)
            metrics.outbox_oldest_pending_age.labels(channel=row.channel).set(age)
            metrics.outbox_failed.labels(channel=row.channel).set(row.failed)
        return True

    async def restore(self) -> None:
        """At start: the last tick's gauges as the store remembers them, not zero."""
        try:
            last: LastTicks = await self._bounded(self._store.last_ticks)
        except (StateError, TimeoutError) as err:
            log.warning("cannot restore the last tick's gauges", error=str(err) or "timeout")
            return
        metrics = self._metrics
        if last.last_success_at is not None:
            metrics.last_success.set(last.last_success_at.timestamp())
        if last.last is not None:
            metrics.targets.set(last.last.targets)
            metrics.set_open_findings(last.last.open_findings)
            metrics.owners_unresolved.set(last.last.owners_unresolved)
            metrics.owner_resolved_share.set(last.last.owner_resolved_share)
            metrics.owner_lookup_incident.set(1 if last.last.owner_lookup_incident else 0)
            metrics.set_unmonitored_findings(last.last.unmonitored)
            metrics.set_acknowledged_findings(last.last.acknowledged)
            metrics.set_open_findings_by_cause(last.last.causes)
        log.info(
            "gauges restored from the state store",
            last_success=last.last_success_at.isoformat() if last.last_success_at else None,
            targets=last.last.targets if last.last else None,
        )

    def refresh_soon(self) -> None:
        """Ask `run` for a pass now (after a tick), without making the caller wait for it."""
        self._poked.set()

    async def run(self, interval: float) -> None:
        """Check and refresh every `interval` seconds, or sooner when asked, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._poked.wait()
            self._poked.clear()
            await self.check()
            await self.refresh()

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        async with asyncio.timeout(self._timeout):
            return await call()
