"""The always-on daemon: start, one tick at a time, reload on SIGHUP, ordered stop on SIGTERM.

`serve()` reads like a table of contents: start, wait for signals, stop. Signal handlers only
flip state. Every long-lived task starts through `aio.start_guarded`: if one dies, the daemon
says so with its traceback and stops (Kubernetes restarts it). The schedule only says a tick is
due (goalkeeper.schedule); the daemon owns the tick's task and decides, at shutdown, to let it
finish or cancel it (which kills its nmap processes). The daemon is the one caller of the clock.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goalkeeper import logs
from goalkeeper.admin import AdminApi
from goalkeeper.aio import Clock, start_guarded, utc_now
from goalkeeper.config import ConfigError, Problem, Settings
from goalkeeper.console import Console
from goalkeeper.delivery import Delivery
from goalkeeper.health import Health, Monotonic
from goalkeeper.metrics import Metrics
from goalkeeper.model import IPAddress, Target
from goalkeeper.probes import HttpServer, build_app, start_http
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.schedule import Schedule
from goalkeeper.state import StateStore
from goalkeeper.storewatch import StoreWatch
from goalkeeper.ticks import InventoryCache, Ticks
from goalkeeper.validity import load_settings, scope_problem
from goalkeeper.wiring import notifiers, owner_check, state_store

log = logs.get_logger(__name__)
TICK_SHARE_OF_SHUTDOWN = 0.6  # of the shutdown deadline a running tick may use to finish
RESEND_INTERVAL_SECONDS = 300  # how often messages left pending are tried again
READINESS_TIMEOUT_SECONDS = 2.0  # also bounds each read of the store's gauges
STORE_WATCH_INTERVAL_SECONDS = 30  # how stale the store's gauges and state_store_up may be


@dataclass(frozen=True)
class Started:
    """What startup opened and started, handed whole to the main loop and to shutdown."""

    store: StateStore
    health: Health
    delivery: Delivery
    ticks: Ticks
    http: HttpServer
    workers: asyncio.Task[None]  # the delivery workers: stopped last, after the drain
    background: tuple[asyncio.Task[None], ...]  # store watch, resend pass, scheduler


class Daemon:
    def __init__(
        self,
        settings: Settings,
        config_path: Path,
        *,
        metrics: Metrics | None = None,
        clock: Clock = utc_now,
        monotonic: Monotonic = time.monotonic,
    ):
        self.settings = settings  # swapped whole on reload; a tick keeps the one it started with
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.catalog = load_catalog()
        self.schedule = Schedule()
        self.inventory = InventoryCache(config_path)
        self._clock = clock
        self._monotonic = monotonic
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._force = False
        self._died: str | None = None  # the name of a root task that ended unexpectedly

    async def serve(self) -> None:
        async with AsyncExitStack() as stack:
            started = await self._startup(stack)
            await self._main_loop()
            await self._shutdown(started)
        if self._died is not None:
            raise RuntimeError(f"{self._died} died: see the log above")
        log.info("stopped")

    # --- startup -------------------------------------------------------------------------

    async def _startup(self, stack: AsyncExitStack) -> Started:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        stack.callback(self._remove_signal_handlers, loop)

        settings = self.settings
        # The store first: one that cannot be opened stops the start before anything listens,
        # with StateUnavailable naming it (the CLI turns that into one line and an exit code).
        store = await stack.enter_async_context(state_store(settings))
        # Before "started": what the store holds shows from the first scrape on, not zero.
        watch = StoreWatch(
            store, self.metrics, timeout=READINESS_TIMEOUT_SECONDS, clock=self._clock
        )
        await watch.restore()
        await watch.check()
        await watch.refresh()
        health = Health(
            schedule=self.schedule,
            store=watch,
            max_tick_seconds=lambda: self.settings.daemon.max_tick_seconds,
            clock=self._clock,
            monotonic=self._monotonic,
        )

        stack.push_async_callback(self.inventory.aclose)
        await self.inventory.get(settings)
        parts = await stack.enter_async_context(notifiers(settings))
        delivery = Delivery(
            store=store,
            mailer=parts.mailer,
            chat=parts.chat,
            metrics=self.metrics,
            wait=False,
            backoff_base=settings.notify.retry_backoff,
            reroute=owner_check(
                owners=self._current_owners,
                store=store,
                settings=lambda: self.settings,
                catalog=self.catalog,
            ),
        )
        ticks = Ticks(
            settings=lambda: self.settings,
            store=store,
            delivery=delivery,
            watch=watch,
            health=health,
            inventory=self.inventory,
            catalog=self.catalog,
            metrics=self.metrics,
            clock=self._clock,
            died=self._task_died,
        )
        app = build_app(
            AdminApi(store, delivery, request_tick=ticks.request),
            health=health,
            registry=self.metrics.registry,
            admin_token=self._admin_token,
            console=Console(
                store.browse,
                admin_token=self._admin_token,
                clock=self._clock,
                resend_seconds=RESEND_INTERVAL_SECONDS,
            ),
        )
        http = await start_http(app, host=settings.http.host, port=settings.http.port)
        stack.push_async_callback(http.aclose)  # stops before the store closes

        workers = self._guard(delivery.run(), "goalkeeper-delivery-workers")
        self.schedule.start(settings.schedule)
        background = (
            self._guard(watch.run(STORE_WATCH_INTERVAL_SECONDS), "goalkeeper-store-watch"),
            self._guard(self._resend(delivery), "goalkeeper-resend"),
            self._guard(
                self.schedule.run(lambda: ticks.request("schedule")), "goalkeeper-scheduler"
            ),
        )
        health.started = True
        log.info(
            "started",
            environment=settings.environment,
            cron=settings.schedule.cron,
            timezone=settings.schedule.timezone,
            next_tick=str(self.schedule.next_run_time()),
        )
        if settings.schedule.run_at_start:
            ticks.request("start")
        return Started(store, health, delivery, ticks, http, workers, background)

    def _guard(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return start_guarded(coro, name=name, died=self._task_died)

    # --- running -------------------------------------------------------------------------

    async def _resend(self, delivery: Delivery) -> None:
        """A pass over the outbox now, every few minutes, and as soon as a channel that was down
        delivers again."""
        while True:
            await delivery.resend_pending()
            await delivery.wait_for_retry(RESEND_INTERVAL_SECONDS)

    async def _current_owners(self) -> Mapping[IPAddress, Target]:
        inventory = await self.inventory.get(self.settings)
        return await inventory.owners()

    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.create_task(self._stop.wait())
            reload = asyncio.create_task(self._reload.wait())
            try:
                await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                reload.cancel()
            if self._reload.is_set() and not self._stop.is_set():
                self._reload.clear()
                self.reload_config()

    def request_stop(self, reason: str = "") -> None:
        if self._stop.is_set():
            self._force = True  # a second signal: stop without waiting
            log.warning("second stop signal: stopping now", signal=reason)
        else:
            log.info("stop requested", signal=reason)
        self._stop.set()

    def _task_died(self, name: str, error: BaseException | None) -> None:
        """A root task ended on its own: never normal. Stop now; the exit code says so."""
        if error is None:
            log.critical("task ended unexpectedly: stopping", task=name)
        else:  # called inside the guard's except block: the traceback goes with it
            log.critical("task died: stopping", task=name, error=str(error), exc_info=True)
        if self._died is None:
            self._died = name
        self._force = True
        self._stop.set()

    def reload_config(self) -> bool:
        """Reread and validate the file; swap it in whole, or keep the old one and say why."""
        try:
            new = load_settings(self.config_path)
            problem = scope_problem(new)
            if problem:
                raise ConfigError([Problem(source=str(self.config_path), key="", message=problem)])
        except ConfigError as err:
            self.metrics.config_reloads.labels(outcome="failure").inc()
            log.error(
                "config reload failed: keeping the running config",
                problems=[str(p) for p in err.problems],
            )
            return False
        old, self.settings = self.settings, new
        logs.REDACTOR.update([*old.secrets(), *new.secrets()])
        if new.schedule != old.schedule:
            self.schedule.reschedule(new.schedule)
        if new.logging != old.logging:
            logs.configure(
                level=new.logging.level, fmt=new.logging.format, secrets=logs.REDACTOR.secrets
            )
        # The inventory source is rebuilt at the next tick; these clients need a restart.
        restart_only = [
            key for key, before, after in (
                ("http", old.http, new.http),
                ("state", old.state, new.state),
                ("notify.email", old.notify.email, new.notify.email),
                ("notify.telegram", old.notify.telegram, new.notify.telegram),
            ) if before != after
        ]  # fmt: skip
        self.metrics.config_reloads.labels(outcome="success").inc()
        ports = new.scan.ports
        log.info(
            "config reloaded",
            ports=len(ports) if ports is not None else len(self.catalog.ports),
            next_tick=str(self.schedule.next_run_time()),
            needs_restart=restart_only or None,
        )
        return True

    def _admin_token(self) -> str | None:
        token = self.settings.http.admin_token
        return token.get_secret_value() if token else None

    # --- shutdown ----------------------------------------------------------------------------

    async def _shutdown(self, started: Started) -> None:
        """Stop scheduling, end the tick, drain notifications; HTTP and clients close after."""
        timeout = self.settings.daemon.shutdown_timeout
        deadline = self._monotonic() + timeout
        started.health.shutting_down = True  # /readyz fails from here on
        started.ticks.stopping = True  # and no tick starts
        # 1. No more ticks due, no more store checks or resend passes (the scheduler stops).
        for task in started.background:
            task.cancel()
        await asyncio.wait(started.background, timeout=1.0)
        # 2. The running tick: a share of the deadline to finish, then cancelled.
        ticks = started.ticks.running()
        if ticks:
            budget = 0 if self._force else timeout * TICK_SHARE_OF_SHUTDOWN
            log.info("waiting for the running tick", seconds=round(budget, 1))
            _, unfinished = await asyncio.wait(ticks, timeout=budget)
            if unfinished:
                for tick in unfinished:
                    tick.cancel()  # the scanner kills its nmap processes
                left = max(1.0, deadline - self._monotonic() - 2)
                await asyncio.wait(unfinished, timeout=left)
        # 3. What the tick queued goes out while time is left; the rest waits in the store.
        budget = 0 if self._force else max(0.0, deadline - self._monotonic() - 1)
        left_pending = await started.delivery.drain(budget)
        if left_pending:
            log.warning(
                "notifications left pending in the store for the next start", count=left_pending
            )
        # 4. The workers, bounded even if a client loses the cancellation: the stack still closes.
        await started.delivery.stop(started.workers, max(1.0, deadline - self._monotonic()))

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def serve(settings: Settings, config_path: Path) -> None:
    await Daemon(settings, config_path).serve()
