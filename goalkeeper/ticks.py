"""The daemon's ticks: one at a time, each in a guarded task the daemon can wait for or cancel.

A tick counts as running from the moment it is asked for until `run_tick` returns (it has then
logged "tick finished"). Its scanner may still be closing (a thread hop): the next tick may be
asked for already, and waits for that before it starts. Also the inventory source kept across
ticks, since it caches. Nothing here reads the clock: the daemon's is passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

from goalkeeper import logs
from goalkeeper.aio import Clock, Died, start_guarded
from goalkeeper.config import Settings
from goalkeeper.delivery import Delivery
from goalkeeper.health import Health
from goalkeeper.metrics import Metrics
from goalkeeper.pipeline import RecentInventory, run_tick
from goalkeeper.scanning.catalog import Catalog
from goalkeeper.state import StateStore
from goalkeeper.storewatch import StoreWatch
from goalkeeper.wiring import inventory_source, new_run_id, scanner

log = logs.get_logger(__name__)


class InventoryCache:
    """The inventory source for the current settings: kept across ticks, rebuilt on change."""

    def __init__(self, config_path: Path) -> None:
        self._config_path = config_path
        self._inventory: RecentInventory | None = None
        self._built_for: tuple[object, ...] = ()
        self._stack = AsyncExitStack()

    async def get(self, settings: Settings) -> RecentInventory:
        wanted = (settings.inventory, settings.scan.allowed_networks)
        if self._inventory is None or wanted != self._built_for:
            await self._stack.aclose()
            self._stack = AsyncExitStack()
            source = await self._stack.enter_async_context(
                inventory_source(settings, self._config_path)
            )
            self._inventory = RecentInventory(source)
            self._built_for = wanted
        return self._inventory

    async def aclose(self) -> None:
        await self._stack.aclose()


class Ticks:
    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        store: StateStore,
        delivery: Delivery,
        watch: StoreWatch,
        health: Health,
        inventory: InventoryCache,
        catalog: Catalog,
        metrics: Metrics,
        clock: Clock,
        died: Died,
    ) -> None:
        self._settings = settings
        self._store = store
        self._delivery = delivery
        self._watch = watch
        self._health = health
        self._inventory = inventory
        self._catalog = catalog
        self._metrics = metrics
        self._clock = clock
        self._died = died
        self._tasks: set[asyncio.Task[None]] = set()
        self.stopping = False  # set by the daemon's shutdown: no tick starts any more

    def request(self, reason: str) -> str | None:
        """Start a tick unless one runs or we are stopping. Returns its run id, or None."""
        if self.stopping or self._health.tick_running:
            log.info("tick not started: one is running or the daemon is stopping", reason=reason)
            return None
        now = self._clock()
        run_id = new_run_id(now)
        self._health.tick_started()  # now, not when the task first runs: one tick at a time
        task = start_guarded(
            self._run(now, run_id, reason, after=self.running()),
            name=f"goalkeeper-tick-{run_id}",
            died=self._died,
            finishable=True,
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run_id

    def running(self) -> set[asyncio.Task[None]]:
        """The tick tasks not done yet: the running one, and one whose scanner still closes."""
        return {task for task in self._tasks if not task.done()}

    async def _run(
        self, now: datetime, run_id: str, reason: str, *, after: Collection[asyncio.Task[None]]
    ) -> None:
        settings = self._settings()  # the config this tick keeps, whatever a reload does meanwhile
        log.info("tick started", tick=run_id, reason=reason)
        ended = False

        def end() -> None:  # once: after it, this tick must not end the next one's mark
            nonlocal ended
            if not ended:
                ended = True
                self._health.tick_ended()

        try:
            if after:
                await asyncio.wait(after)  # the last tick's scanner, closing
            inventory = await self._inventory.get(settings)
            async with scanner(settings) as nmap:
                try:
                    await run_tick(
                        now=now,
                        run_id=run_id,
                        settings=settings,
                        inventory=inventory,
                        scanner=nmap,
                        store=self._store,
                        dispatch=self._delivery,
                        catalog=self._catalog,
                        metrics=self._metrics,
                        hold=self._delivery.hold,
                    )
                finally:
                    end()
        except asyncio.CancelledError:
            self._metrics.ticks.labels(outcome="cancelled").inc()
            log.warning("tick cancelled", tick=run_id)
            raise
        except Exception as err:  # a commit the store refused too (StateError): not a success
            self._metrics.ticks.labels(outcome="failure").inc()
            # With its traceback: a failure that is not an outage (a bug) must be findable.
            log.exception("tick failed", tick=run_id, error=err)
        finally:
            end()
        self._watch.refresh_soon()  # the messages this tick stored
