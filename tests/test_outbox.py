"""Memory across ticks: new, reminder, resolved; the outbox's delivery rules; send-time owners.

Whole ticks with the real clients (`one_tick`): real nmap on 127.45.0.0/16, the SMTP sink,
the fake Telegram and a SQLite store in the test's folder. Time is passed in.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from goalkeeper import configsources
from goalkeeper.config import Settings
from goalkeeper.delivery import Delivery
from goalkeeper.metrics import Metrics
from goalkeeper.model import Transport
from goalkeeper.pipeline import RecentInventory, run_tick
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.state import OutboxMessage, StateError, StateStore
from goalkeeper.storewatch import StoreWatch
from goalkeeper.wiring import inventory_source, notifiers, one_tick, owner_check, scanner
from goalkeeper_sim.listeners import PortListeners
from goalkeeper_sim.smtp import SmtpSink
from goalkeeper_sim.telegram import FakeTelegram

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
HOST = "127.45.0.7"
ALICE = "alice@customer.example"
BOB = "bob@other.example"


@dataclass
class World:
    tmp: Path
    smtp: SmtpSink
    telegram: FakeTelegram

    def settings(self, owner: str = ALICE) -> tuple[Settings, Path]:
        (self.tmp / "inventory.yaml").write_text(
            yaml.safe_dump(
                {
                    "targets": [
                        {
                            "address": HOST,
                            "server_name": "db-1",
                            "project_id": "p1",
                            "owner_email": owner,
                        }
                    ]
                }
            )
        )
        data: dict[str, Any] = {
            "environment": "prod",
            "scan": {"ports": [{"port": 6379, "service": "redis"}],
                     "allowed_networks": ["127.45.0.0/16"], "allow_loopback": True,
                     "privileged": False,
                     "nmap_arguments": "-Pn -n -T4 --max-retries 1 --host-timeout 30s"},
            "inventory": {"source": "static", "static_file": "inventory.yaml"},
            "notify": {"send_to_customers": True, "ops_email": "ops@provider.example",
                       "sender": "Goalkeeper <ops@provider.example>", "reminder_days": 1,
                       "email": {"host": self.smtp.host, "port": self.smtp.port,
                                 "starttls": False, "timeout": 5},
                       "telegram": {"enabled": True, "chat_id": "-100555",
                                    "api_base": self.telegram.url}},
            "state": {"url": f"sqlite+aiosqlite:///{self.tmp / 'state.db'}"},
        }  # fmt: skip
        path = self.tmp / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        env = {"GOALKEEPER_NOTIFY__TELEGRAM__TOKEN": self.telegram.token}
        return configsources.load(path, environ=env), path

    def mails_to(self, recipient: str) -> list[str]:
        return [str(m.message["Subject"]) for m in self.smtp.messages if recipient in m.rcpt_tos]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with SmtpSink() as smtp, FakeTelegram() as telegram:
        yield World(tmp_path, smtp, telegram)


def listening() -> PortListeners:
    return PortListeners([(ip_address(HOST), 6379, Transport.TCP)])


async def test_new_then_quiet_then_reminder_then_thanks(world: World) -> None:
    settings, path = world.settings()
    async with listening():
        with capture_logs() as logged:
            first = await one_tick(settings, path, now=T0)
        (finished,) = [line for line in logged if line["event"] == "tick finished"]
        stages = ("inventory_s", "scan_s", "record_s", "dispatch_s")  # what each took
        assert all(finished[stage] >= 0 for stage in stages)
        # Each figure is rounded to the millisecond on its own: the sum may gain 1.5 ms.
        assert finished["inventory_s"] + finished["scan_s"] <= finished["duration_s"] + 0.002
        assert [m.delivered for m in first.mails] == [True]
        assert len(world.mails_to(ALICE)) == 1
        quiet = await one_tick(settings, path, now=T0 + timedelta(hours=2))
        assert quiet.mails == ()  # nothing new to say: no mail
        assert len(quiet.findings) == 1
        reminder = await one_tick(settings, path, now=T0 + timedelta(days=1))
        assert len(reminder.mails) == 1
        assert len(world.mails_to(ALICE)) == 2
    fixed = await one_tick(settings, path, now=T0 + timedelta(days=1, hours=1))
    assert fixed.findings == ()
    assert [str(f.address) for f in fixed.resolved] == [HOST]
    subjects = world.mails_to(ALICE)
    assert len(subjects) == 3
    assert "closed" in subjects[-1].lower()
    after = await one_tick(settings, path, now=T0 + timedelta(days=3))
    assert after.mails == ()  # resolved findings are thanked once
    assert len(world.telegram.messages) == 5  # one summary per tick

    store = await StateStore.open(settings.state.url)
    try:
        (record,) = await store.list_findings(include_resolved=True)
    finally:
        await store.aclose()
    assert record.first_seen == T0
    assert record.resolved_at == T0 + timedelta(days=1, hours=1)
    assert record.times_notified == 3


async def test_temporary_smtp_refusal_then_success_delivers_once(world: World) -> None:
    settings, path = world.settings()
    world.smtp.fail_next(451, count=1)
    async with listening():
        report = await one_tick(settings, path, now=T0)
    assert [m.delivered for m in report.mails] == [True]
    assert len(world.mails_to(ALICE)) == 1
    store = await StateStore.open(settings.state.url)
    try:
        assert await store.pending() == []
    finally:
        await store.aclose()


async def test_permanent_refusal_is_marked_failed_and_told_to_ops(world: World) -> None:
    settings, path = world.settings()
    world.smtp.fail_next(550, count=1)
    async with listening():
        first = await one_tick(settings, path, now=T0)
        (mail,) = first.mails
        assert not mail.delivered
        assert mail.error is not None
        assert "550" in mail.error
        assert world.smtp.messages == []
        store = await StateStore.open(settings.state.url)
        try:
            (failed,) = await store.failed_since(T0 - timedelta(days=1))
            assert failed.recipient == ALICE
            assert await store.pending() == []
        finally:
            await store.aclose()
        second = await one_tick(settings, path, now=T0 + timedelta(hours=1))
    assert any(ALICE in line and "550" in line for line in second.notification_failures)
    summary = world.telegram.messages[-1].plain
    assert "given up on" in summary
    assert ALICE in summary


class Hold:
    """A dispatcher that sends nothing: the outbox is written, delivery comes later."""

    def __init__(self) -> None:
        self.held: list[OutboxMessage] = []

    async def submit(self, messages: Sequence[OutboxMessage]) -> dict[int, str | None]:
        self.held.extend(messages)
        return {}


async def test_owner_is_checked_again_at_send_time(world: World) -> None:
    settings, path = world.settings(owner=ALICE)
    catalog = load_catalog()
    store = await StateStore.open(settings.state.url)
    try:
        async with (
            listening(),
            inventory_source(settings, path) as source,
            scanner(settings) as nmap,
        ):
            hold = Hold()
            await run_tick(
                now=T0, run_id="run-1", settings=settings, inventory=RecentInventory(source),
                scanner=nmap, store=store, dispatch=hold, catalog=catalog,
            )  # fmt: skip
        assert {m.recipient for m in hold.held if m.channel == "email"} == {ALICE}

        settings, path = world.settings(owner=BOB)  # the address changed hands meanwhile
        async with inventory_source(settings, path) as source, notifiers(settings) as parts:
            inventory = RecentInventory(source)
            delivery = Delivery(
                store=store, mailer=parts.mailer, chat=parts.chat, metrics=Metrics(), wait=True,
                reroute=owner_check(owners=inventory.owners, store=store,
                                    settings=lambda: settings, catalog=catalog),
            )  # fmt: skip
            async with delivery.running():
                await delivery.resend_pending()
                await delivery.drain(30)
        assert world.mails_to(ALICE) == []
        assert len(world.mails_to(BOB)) == 1
        rerouted = [m for m in await store.failed_since(T0 - timedelta(days=1))]
        assert [m.recipient for m in rerouted] == [ALICE]
        assert rerouted[0].last_error is not None
        assert "changed owner" in rerouted[0].last_error
        assert await store.pending() == []
    finally:
        await store.aclose()


def gauges(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("goalkeeper_") and not s.name.startswith("goalkeeper_build")
    }


async def test_a_restarted_daemon_shows_what_the_last_tick_left(world: World) -> None:
    settings, path = world.settings()
    catalog = load_catalog()
    metrics = Metrics()
    store = await StateStore.open(settings.state.url)
    try:
        async with (
            listening(),
            inventory_source(settings, path) as source,
            scanner(settings) as nmap,
        ):
            await run_tick(
                now=T0, run_id="run-1", settings=settings, inventory=RecentInventory(source),
                scanner=nmap, store=store, dispatch=Hold(), catalog=catalog, metrics=metrics,
            )  # fmt: skip
    finally:
        await store.aclose()
    before = gauges(metrics)
    assert before[("goalkeeper_ticks_total", (("outcome", "success"),))] == 1
    assert before[("goalkeeper_targets", ())] == 1

    restarted = Metrics()  # a new process: every series starts at zero
    store = await StateStore.open(settings.state.url)
    try:
        watch = StoreWatch(store, restarted, timeout=5, clock=lambda: T0 + timedelta(hours=1))
        await watch.restore()
        assert await watch.refresh()
    finally:
        await store.aclose()
    after = gauges(restarted)
    for name in ("goalkeeper_last_tick_success_timestamp_seconds", "goalkeeper_targets",
                 "goalkeeper_open_findings", "goalkeeper_owners_unresolved"):  # fmt: skip
        kept = {key: value for key, value in before.items() if key[0] == name}
        assert kept and {key: after[key] for key in kept} == kept, name
    assert after[("goalkeeper_outbox_pending", (("channel", "email"),))] == 1
    assert after[("goalkeeper_outbox_pending", (("channel", "telegram"),))] == 1
    assert after[("goalkeeper_outbox_oldest_pending_age_seconds", (("channel", "email"),))] == 3600


async def test_a_tick_whose_commit_goes_nowhere_fails(world: World) -> None:
    settings, path = world.settings()
    metrics = Metrics()
    store = await StateStore.open(settings.state.url)
    database = world.tmp / "state.db"
    try:
        await store.check(now=T0)
        moved = world.tmp / "moved.db"
        await asyncio.to_thread(database.rename, moved)
        await asyncio.to_thread(shutil.copyfile, moved, database)
        await asyncio.to_thread((world.tmp / "state.db-wal").unlink)
        hold = Hold()
        async with (
            listening(),
            inventory_source(settings, path) as source,
            scanner(settings) as nmap,
        ):
            with pytest.raises(StateError, match="replaced"):
                await run_tick(
                    now=T0, run_id="run-1", settings=settings, inventory=RecentInventory(source),
                    scanner=nmap, store=store, dispatch=hold, catalog=load_catalog(),
                    metrics=metrics,
                )  # fmt: skip
    finally:
        await store.aclose()
    assert hold.held == []  # nothing stored, so nothing handed on to be sent
    assert gauges(metrics)[("goalkeeper_ticks_total", (("outcome", "success"),))] == 0
    assert gauges(metrics)[("goalkeeper_last_tick_success_timestamp_seconds", ())] == 0
