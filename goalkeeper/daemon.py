"""The always-on daemon: schedule, one tick at a time, reload on SIGHUP, ordered stop on SIGTERM.

`serve()` reads like a table of contents: start, wait for signals, stop. Signal handlers only
flip state. APScheduler 3 does not wait for running jobs, so the scheduler only *asks* for a
tick; the daemon owns the tick's task and decides, at shutdown, to let it finish or cancel it
(which kills its nmap processes). This module is the one importer of APScheduler.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from goalkeeper import config, logs
from goalkeeper.config import ConfigError, Problem, Settings
from goalkeeper.crontab import crontab_weekdays
from goalkeeper.delivery import Delivery
from goalkeeper.inventory.static import static_inventory_problems
from goalkeeper.messages import retry_failed
from goalkeeper.metrics import Metrics
from goalkeeper.model import IPAddress, Target
from goalkeeper.pipeline import RecentInventory, run_tick
from goalkeeper.probes import HttpServer, build_app, start_http
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.state import Channel, StateStore
from goalkeeper.storewatch import StoreWatch
from goalkeeper.views import record_as_dict
from goalkeeper.wiring import (
    inventory_source,
    new_run_id,
    notifiers,
    owner_check,
    scanner,
    scope_problem,
    state_store,
)

log = logs.get_logger(__name__)
MISFIRE_GRACE_SECONDS = 6 * 3600  # a tick that is late (daemon busy, clock jump) still runs
TICK_SHARE_OF_SHUTDOWN = 0.6  # of the shutdown deadline a running tick may use to finish
RESEND_INTERVAL_SECONDS = 300  # how often messages left pending are tried again
READINESS_TIMEOUT_SECONDS = 2.0  # also bounds each read of the store's gauges
STORE_WATCH_INTERVAL_SECONDS = 30  # how stale the store's gauges and state_store_up may be
CRON_HORIZON_YEARS = 100


def cron_trigger(settings: Settings, *, end_date: datetime | None = None) -> CronTrigger:
    """The schedule as a standard 5-field crontab means it.

    APScheduler 3's `from_crontab` numbers weekdays from Monday = 0, crontab from Sunday = 0:
    "0 6 * * 1" would run on Tuesdays. So the weekday field is handed over as names.
    """
    fields = settings.schedule.cron.split()
    if len(fields) != 5:
        raise ValueError(f"a cron expression has 5 fields, not {len(fields)}")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(weekday),
        timezone=settings.schedule.timezone,
        end_date=end_date,
    )


@config.section_check("schedule")
def schedule_problems(settings: Settings, config_path: Path) -> list[Problem]:
    """A config check: the cron expression must be one APScheduler accepts, and must fire.

    "0 0 30 2 *" parses, but the daemon would start, never tick and look healthy. APScheduler
    searches to the year 9999 before it gives up; an end date makes the search stop early.
    """
    now = datetime.now(UTC)
    try:
        trigger = cron_trigger(settings, end_date=now.replace(year=now.year + CRON_HORIZON_YEARS))
    except ValueError as err:
        return [Problem(source=str(config_path), key="schedule.cron", message=str(err))]
    if trigger.get_next_fire_time(None, now) is None:
        message = f"never fires: no date matches it in the next {CRON_HORIZON_YEARS} years"
        return [Problem(source=str(config_path), key="schedule.cron", message=message)]
    return []


def load_settings(path: Path) -> Settings:
    """Load and validate everything a tick depends on; raise ConfigError listing every problem."""
    return config.load(path, checks=(schedule_problems, static_inventory_problems))


class Daemon:
    def __init__(self, settings: Settings, config_path: Path, *, metrics: Metrics | None = None):
        self.settings = settings  # swapped whole on reload; a tick keeps the one it started with
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.catalog = load_catalog()
        self.http: HttpServer | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._force = False
        self._shutting_down = False
        self._ready = False
        self._tick: asyncio.Task[None] | None = None
        self._tick_started: float | None = None
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._inventory: RecentInventory | None = None
        self._store: StateStore | None = None
        self._inventory_settings: tuple[object, ...] = ()
        self._inventory_stack = AsyncExitStack()
        self._delivery: Delivery | None = None
        self._watch: StoreWatch | None = None

    async def serve(self) -> None:
        async with AsyncExitStack() as stack:
            await self._startup(stack)
            await self._main_loop()
            await self._shutdown()
        log.info("stopped")

    # --- startup -------------------------------------------------------------------------

    async def _startup(self, stack: AsyncExitStack) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        stack.callback(self._remove_signal_handlers, loop)

        settings = self.settings
        # The store first: one that cannot be opened stops the start before anything listens,
        # with StateUnavailable naming it (the CLI turns that into one line and an exit code).
        self._store = store = await stack.enter_async_context(state_store(settings))
        # Before "started": what the store holds shows from the first scrape on, not zero.
        self._watch = StoreWatch(store, self.metrics, timeout=READINESS_TIMEOUT_SECONDS)
        await self._watch.restore()
        await self._watch.check()
        await self._watch.refresh()
        app = build_app(self, registry=self.metrics.registry, admin_token=self._admin_token)
        self.http = await start_http(app, host=settings.http.host, port=settings.http.port)
        stack.push_async_callback(self.http.aclose)  # stops before the store closes

        stack.push_async_callback(self._close_inventory)
        await self._inventory_for(settings)
        parts = await stack.enter_async_context(notifiers(settings))
        self._delivery = Delivery(
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
        self._workers = asyncio.create_task(self._background(), name="goalkeeper-delivery")

        self._scheduler.add_job(
            self._on_schedule,
            trigger=cron_trigger(settings),
            id="tick",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
        )
        self._scheduler.start()
        self._ready = True
        log.info(
            "started",
            environment=settings.environment,
            cron=settings.schedule.cron,
            timezone=settings.schedule.timezone,
            next_tick=str(self._next_run_time()),
        )
        if settings.schedule.run_at_start:
            self.request_tick("start")

    # --- running -------------------------------------------------------------------------

    async def _background(self) -> None:
        """The delivery workers, the store watch, and a pass over the outbox now, every few
        minutes, and as soon as a channel that was down delivers again."""
        assert self._delivery is not None and self._watch is not None
        delivery = self._delivery
        async with asyncio.TaskGroup() as group:
            group.create_task(delivery.run(), name="goalkeeper-workers")
            group.create_task(
                self._watch.run(STORE_WATCH_INTERVAL_SECONDS), name="goalkeeper-store-watch"
            )
            while True:
                await delivery.resend_pending()
                await delivery.wait_for_retry(RESEND_INTERVAL_SECONDS)

    async def _current_owners(self) -> Mapping[IPAddress, Target]:
        inventory = await self._inventory_for(self.settings)
        return await inventory.owners()

    async def _main_loop(self) -> None:
        while not self._stop.is_set():
            stop = asyncio.create_task(self._stop.wait())
            reload = asyncio.create_task(self._reload.wait())
            try:
                await asyncio.wait(
                    {stop, reload, self._workers}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stop.cancel()
                reload.cancel()
            if self._workers.done():
                # A worker must never end on its own: stop loudly and let Kubernetes restart us.
                error = self._workers.exception() if not self._workers.cancelled() else None
                log.critical("notification workers died", error=error)
                self._stop.set()
                raise RuntimeError("notification workers died") from error
            if self._reload.is_set():
                self._reload.clear()
                self.reload_config()

    def request_stop(self, reason: str = "") -> None:
        if self._stop.is_set():
            self._force = True  # a second signal: stop without waiting
            log.warning("second stop signal: stopping now", signal=reason)
        else:
            log.info("stop requested", signal=reason)
        self._stop.set()

    def request_tick(self, reason: str) -> str | None:
        """Start a tick unless one runs or we are stopping. Returns its run id, or None."""
        if self._shutting_down or (self._tick is not None and not self._tick.done()):
            log.info("tick not started: one is running or the daemon is stopping", reason=reason)
            return None
        now = datetime.now(UTC)
        run_id = new_run_id(now)
        self._tick = asyncio.create_task(
            self._run_tick(now, run_id, reason), name=f"goalkeeper-tick-{run_id}"
        )
        return run_id

    async def _on_schedule(self) -> None:
        self.request_tick("schedule")

    async def _run_tick(self, now: datetime, run_id: str, reason: str) -> None:
        settings = self.settings  # the config this tick keeps, whatever a reload does meanwhile
        assert self._delivery is not None and self._store is not None
        self._tick_started = time.monotonic()
        log.info("tick started", tick=run_id, reason=reason)
        try:
            inventory = await self._inventory_for(settings)
            async with scanner(settings) as nmap:
                await run_tick(
                    now=now,
                    run_id=run_id,
                    settings=settings,
                    inventory=inventory,
                    scanner=nmap,
                    store=self._store,
                    dispatch=self._delivery,
                    catalog=self.catalog,
                    metrics=self.metrics,
                    hold=self._delivery.hold,
                )
        except asyncio.CancelledError:
            self.metrics.ticks.labels(outcome="cancelled").inc()
            log.warning("tick cancelled", tick=run_id)
            raise
        except Exception as err:  # a commit the store refused too (StateError): not a success
            self.metrics.ticks.labels(outcome="failure").inc()
            # With its traceback: a failure that is not an outage (a bug) must be findable.
            log.exception("tick failed", tick=run_id, error=err)
        finally:
            self._tick_started = None
        if self._watch is not None:
            self._watch.refresh_soon()  # the messages this tick stored

    async def _inventory_for(self, settings: Settings) -> RecentInventory:
        """The inventory source for `settings`: kept across ticks (it caches), rebuilt on change."""
        wanted = (settings.inventory, settings.scan.allowed_networks)
        if self._inventory is None or wanted != self._inventory_settings:
            await self._inventory_stack.aclose()
            self._inventory_stack = AsyncExitStack()
            source = await self._inventory_stack.enter_async_context(
                inventory_source(settings, self.config_path)
            )
            self._inventory = RecentInventory(source)
            self._inventory_settings = wanted
        return self._inventory

    async def _close_inventory(self) -> None:
        await self._inventory_stack.aclose()

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
            self._scheduler.reschedule_job("tick", trigger=cron_trigger(new))
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
            next_tick=str(self._next_run_time()),
            needs_restart=restart_only or None,
        )
        return True

    # --- probes ----------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        problems = []
        if not self._scheduler.running:
            problems.append("scheduler not running")
        running_for = time.monotonic() - self._tick_started if self._tick_started else None
        if running_for is not None and running_for > self.settings.daemon.max_tick_seconds:
            problems.append(f"tick running for {running_for:.0f} s")
        next_run = self._next_run_time()
        if next_run is not None:
            late = (datetime.now(UTC) - next_run).total_seconds()
            if late > MISFIRE_GRACE_SECONDS:
                problems.append(f"scheduled tick overdue by {late:.0f} s")
        details: dict[str, Any] = {
            "tick_running": running_for is not None,
            "next_tick": str(next_run) if next_run else None,
        }
        if problems:
            details["problems"] = problems
        return not problems, details

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: started, not stopping, and the store wrote and read back a heartbeat now."""
        if self._watch is None:
            problem: str | None = "not open yet"
        elif self._shutting_down:  # the store is about to close: the last answer stands
            problem = self._watch.problem
        else:
            problem = await self._watch.check()
        ok = self._ready and not self._shutting_down and problem is None
        details: dict[str, Any] = {"shutting_down": self._shutting_down, "started": self._ready,
                                   "state_store": problem is None}  # fmt: skip
        if problem is not None:
            details["state_store_problem"] = problem
        return ok, details

    async def findings(self, *, include_resolved: bool) -> list[dict[str, Any]]:
        if self._store is None:
            return []
        records = await self._store.list_findings(include_resolved=include_resolved)
        return [record_as_dict(r) for r in records]

    async def retry_failed(
        self, *, channel: str | None, ids: list[int] | None, who: str
    ) -> dict[str, Any]:
        """POST /outbox/retry: failed messages back to pending, and sent now (not in 5 min)."""
        if self._store is None or self._delivery is None:
            return {"moved": [], "skipped": {}}
        wanted: Channel | None = None
        if channel == "email":
            wanted = "email"
        elif channel == "telegram":
            wanted = "telegram"
        retried = await retry_failed(self._store, channel=wanted, ids=ids, who=who)
        if retried.moved:
            await self._delivery.resend_pending()
        return retried.as_dict()

    def _admin_token(self) -> str | None:
        token = self.settings.http.admin_token
        return token.get_secret_value() if token else None

    def _next_run_time(self) -> datetime | None:
        job = self._scheduler.get_job("tick") if self._scheduler.running else None
        return job.next_run_time if job else None

    # --- shutdown ----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop scheduling, end the tick, drain notifications; HTTP and clients close after."""
        deadline = time.monotonic() + self.settings.daemon.shutdown_timeout
        self._shutting_down = True  # /readyz fails from here on
        self._scheduler.shutdown(wait=False)
        tick = self._tick
        if tick is not None and not tick.done():
            budget = (
                0 if self._force else self.settings.daemon.shutdown_timeout * TICK_SHARE_OF_SHUTDOWN
            )
            log.info("waiting for the running tick", seconds=round(budget, 1))
            done, _ = await asyncio.wait({tick}, timeout=budget)
            if not done:
                tick.cancel()  # the scanner kills its nmap processes
                await asyncio.wait({tick}, timeout=max(1.0, deadline - time.monotonic() - 2))
        if self._delivery is not None:
            budget = 0 if self._force else max(0.0, deadline - time.monotonic() - 1)
            left = await self._delivery.drain(budget)
            if left:
                log.warning(
                    "notifications left pending in the store for the next start", count=left
                )
        if self._delivery is not None:
            # Bounded even if a client loses the cancellation: the exit stack still closes.
            await self._delivery.stop(self._workers, max(1.0, deadline - time.monotonic()))

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def serve(settings: Settings, config_path: Path) -> None:
    await Daemon(settings, config_path).serve()
