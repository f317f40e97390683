"""Wiring: settings → the real inventory source, scanner and notifiers → ticks.

This is the one place that knows which concrete class serves each seam of the pipeline, and the
one importer of APScheduler. The CLI's one-shot `scan` and the always-on daemon share
`Components`, so both run exactly the same tick.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.triggers.cron import CronTrigger

from goalkeeper import config
from goalkeeper.config import Problem, Settings
from goalkeeper.inventory.cloud import CloudInventory
from goalkeeper.inventory.static import (
    StaticInventory,
    resolve_static_path,
    static_inventory_problems,
)
from goalkeeper.metrics import Metrics
from goalkeeper.model import ChatNotifier, InventorySource, Mailer, Scanner, TickReport
from goalkeeper.notify.email import SmtpMailer
from goalkeeper.notify.telegram import TelegramNotifier
from goalkeeper.pipeline import run_tick
from goalkeeper.scanning.catalog import Catalog, load_catalog
from goalkeeper.scanning.nmap import NmapScanner


def schedule_problems(settings: Settings, config_path: Path) -> list[Problem]:
    """A config check: the cron expression must be one APScheduler accepts."""
    try:
        cron_trigger(settings)
    except ValueError as err:
        return [Problem(source=str(config_path), key="schedule.cron", message=str(err))]
    return []


def cron_trigger(settings: Settings) -> CronTrigger:
    return CronTrigger.from_crontab(settings.schedule.cron, timezone=settings.schedule.timezone)


def load_settings(path: Path) -> Settings:
    """Load and validate everything a tick depends on; raise ConfigError listing every problem."""
    return config.load(path, checks=(schedule_problems, static_inventory_problems))


def scope_problem(settings: Settings) -> str | None:
    if not settings.scan.allowed_networks:
        return (
            "scan.allowed_networks is empty: nothing may be scanned. "
            "List the cloud's public ranges there (CIDRs)."
        )
    return None


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Components:
    settings: Settings
    inventory: InventorySource
    scanner: Scanner
    mailer: Mailer
    chat: ChatNotifier | None
    catalog: Catalog
    metrics: Metrics


@asynccontextmanager
async def components(
    settings: Settings, config_path: Path, *, metrics: Metrics | None = None
) -> AsyncIterator[Components]:
    """Build the real clients for `settings`, and close them all on exit."""
    async with AsyncExitStack() as stack:
        inventory: InventorySource
        if settings.inventory.source == "static":
            inventory = StaticInventory(
                resolve_static_path(settings, config_path), allowed=settings.scan.allowed_networks
            )
        else:
            cloud = CloudInventory(settings.inventory)
            stack.push_async_callback(cloud.aclose)
            inventory = cloud
        scanner = NmapScanner(settings.scan)
        stack.push_async_callback(scanner.aclose)
        chat: ChatNotifier | None = None
        if settings.notify.telegram.enabled:
            telegram = TelegramNotifier(settings.notify.telegram)
            stack.push_async_callback(telegram.aclose)
            chat = telegram
        yield Components(
            settings=settings,
            inventory=inventory,
            scanner=scanner,
            mailer=SmtpMailer(settings.notify.email),
            chat=chat,
            catalog=load_catalog(),
            metrics=metrics or Metrics(),
        )


async def tick_once(
    parts: Components, *, now: datetime | None = None, dry_run: bool = False
) -> TickReport:
    now = now or datetime.now(UTC)
    return await run_tick(
        now=now,
        run_id=new_run_id(now),
        settings=parts.settings,
        inventory=parts.inventory,
        scanner=parts.scanner,
        mailer=parts.mailer,
        chat=parts.chat,
        catalog=parts.catalog,
        metrics=parts.metrics,
        dry_run=dry_run,
    )
