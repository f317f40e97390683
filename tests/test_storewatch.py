"""Gauges read from the store: pending mail during an SMTP outage, and the last tick, restarted.

A real SMTP client against a real aiosmtpd that refuses, or against a port nobody listens on;
real stores (SQLite and PostgreSQL where tests/db.py offers it); time passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from goalkeeper.config import EmailSettings
from goalkeeper.delivery import Delivery
from goalkeeper.metrics import Metrics
from goalkeeper.model import OutgoingMail
from goalkeeper.notify.email import SmtpMailer
from goalkeeper.state import NewMessage, StateStore, TickRecord
from goalkeeper.storewatch import StoreWatch
from goalkeeper_sim.smtp import SmtpSink
from tests.daemon_process import free_port
from tests.recorded_sleep import RecordedSleep

pytest_plugins = ["tests.db"]  # the state_url and postgres_server fixtures

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def email(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, (("channel", "email"),)


async def commit_mail(store: StateStore) -> None:
    mail = OutgoingMail(recipient="owner@customer.example", sender="ops@provider.example",
                        subject="Exposed", text="t", html="<p>t</p>",
                        message_id="<r1.owner@provider.example>")  # fmt: skip
    await store.commit_tick(
        run_id="r1", started_at=T0, upserts=[],
        messages=[NewMessage.email(mail, recipient_key="owner@customer.example")],
    )  # fmt: skip


async def send_pending(store: StateStore, port: int, metrics: Metrics, *, now: datetime) -> None:
    settings = EmailSettings(host="127.0.0.1", port=port, starttls=False, timeout=5)
    mailer = SmtpMailer(settings, sleep=RecordedSleep())
    delivery = Delivery(store=store, mailer=mailer, chat=None, metrics=metrics, wait=True,
                        sleep=RecordedSleep(), clock=lambda: now)  # fmt: skip
    try:
        async with delivery.running():
            (result,) = (await delivery.submit(await store.pending())).values()
    finally:
        await mailer.aclose()
    assert result is not None and "will be retried" in result


@pytest.mark.parametrize("outage", ["refusing", "down"])
async def test_an_smtp_outage_shows_as_pending_mail_and_survives_a_restart(
    store: StateStore, state_url: str, outage: str
) -> None:
    now = T0 + timedelta(hours=2)
    metrics = Metrics()
    await commit_mail(store)
    async with SmtpSink() as smtp:
        smtp.fail_next(451, count=100)
        await send_pending(store, smtp.port if outage == "refusing" else free_port(), metrics,
                           now=now)  # fmt: skip
    before = samples(metrics)
    # What the process's own counters say: nothing failed, nothing queued. Not the truth.
    assert before[("goalkeeper_notifications_total", (("channel", "email"),
                                                      ("outcome", "failed")))] == 0  # fmt: skip
    assert before[email("goalkeeper_notification_queue_depth")] == 0
    assert before[email("goalkeeper_outbox_pending")] == 0  # not read from the store yet

    assert await StoreWatch(store, metrics, timeout=5, clock=lambda: now).refresh()
    after = samples(metrics)
    assert after[email("goalkeeper_outbox_pending")] == 1
    assert after[email("goalkeeper_outbox_oldest_pending_age_seconds")] == 7200
    assert after[email("goalkeeper_outbox_failed")] == 0
    assert after[("goalkeeper_outbox_pending", (("channel", "telegram"),))] == 0

    restarted, later = Metrics(), now + timedelta(minutes=30)
    again = await StateStore.open(state_url)
    try:
        assert await StoreWatch(again, restarted, timeout=5, clock=lambda: later).refresh()
    finally:
        await again.aclose()
    gauges = samples(restarted)
    assert gauges[email("goalkeeper_outbox_pending")] == 1
    assert gauges[email("goalkeeper_outbox_oldest_pending_age_seconds")] == 9000


async def test_given_up_messages_are_counted_and_the_age_falls_back_to_zero(
    store: StateStore,
) -> None:
    await commit_mail(store)
    (message,) = await store.pending()
    await store.mark_failed(message.id, reason="550 no such user", now=T0)
    metrics = Metrics()
    assert await StoreWatch(store, metrics, timeout=5, clock=lambda: T0).refresh()
    gauges = samples(metrics)
    assert gauges[email("goalkeeper_outbox_failed")] == 1
    assert gauges[email("goalkeeper_outbox_pending")] == 0
    assert gauges[email("goalkeeper_outbox_oldest_pending_age_seconds")] == 0


async def test_the_last_tick_gauges_are_restored_at_start(store: StateStore) -> None:
    counts = (("redis", 6379, "tcp", "unauthenticated", 3), ("ntp", 123, "udp", "none", 1))
    good = TickRecord("success", targets=40, owners_unresolved=2, open_findings=counts)
    await store.finish_run("r1", finished_at=T0, summary=good.summary())
    failed = TickRecord(
        "failure", targets=41, owners_unresolved=2, open_findings=good.open_findings,
        owner_resolved_share=0.25, owner_lookup_incident=True,
        unmonitored={"port no longer on the scan list": 2, "host not scanned: nmap failed": 1},
        causes={"world_rule": 3, "unknown": 1},
    )  # fmt: skip
    await store.finish_run("r2", finished_at=T0 + timedelta(days=1), summary=failed.summary())

    metrics = Metrics()
    await StoreWatch(store, metrics, timeout=5).restore()
    gauges = samples(metrics)
    assert gauges[("goalkeeper_last_tick_success_timestamp_seconds", ())] == T0.timestamp()
    assert gauges[("goalkeeper_targets", ())] == 41  # the last tick, successful or not
    assert gauges[("goalkeeper_owners_unresolved", ())] == 2
    # An owner lookup incident keeps alerting across a restart, until a tick says otherwise.
    assert gauges[("goalkeeper_owner_resolved_share", ())] == 0.25
    assert gauges[("goalkeeper_owner_lookup_incident", ())] == 1
    open_findings = {labels: value for (name, labels), value in gauges.items()
                     if name == "goalkeeper_open_findings"}  # fmt: skip
    assert open_findings == {
        (
            ("grade", "unauthenticated"),
            ("port", "6379"),
            ("protocol", "tcp"),
            ("service", "redis"),
        ): 3,
        (("grade", "none"), ("port", "123"), ("protocol", "udp"), ("service", "ntp")): 1,
    }
    unmonitored = {labels: value for (name, labels), value in gauges.items()
                   if name == "goalkeeper_unmonitored_findings" and value}  # fmt: skip
    assert unmonitored == {
        (("reason", "port no longer on the scan list"),): 2,
        (("reason", "host not scanned"),): 1,
    }
    by_cause = {labels: value for (name, labels), value in gauges.items()
                if name == "goalkeeper_open_findings_by_cause"}  # fmt: skip
    assert by_cause == {
        (("cause", "world_rule"),): 3,
        (("cause", "port_security_disabled"),): 0,
        (("cause", "unknown"),): 1,
    }


def test_a_tick_record_from_before_unmonitored_findings_reads_as_none() -> None:
    old = {"outcome": "success", "targets": 3, "open_findings": [], "owners_unresolved": 0}
    record = TickRecord.from_summary(old)
    assert record is not None and record.unmonitored == {}


async def test_a_record_from_before_owner_lookups_restores_no_incident(store: StateStore) -> None:
    old = TickRecord("success", targets=3, owners_unresolved=0, open_findings=()).summary()
    del old["owner_resolved_share"], old["owner_lookup_incident"]
    await store.finish_run("r1", finished_at=T0, summary=old)
    metrics = Metrics()
    await StoreWatch(store, metrics, timeout=5).restore()
    gauges = samples(metrics)
    assert gauges[("goalkeeper_targets", ())] == 3  # the record still reads
    assert gauges[("goalkeeper_owner_lookup_incident", ())] == 0
    assert gauges[("goalkeeper_owner_resolved_share", ())] == 1


async def test_an_empty_store_restores_nothing(store: StateStore) -> None:
    metrics = Metrics()
    await StoreWatch(store, metrics, timeout=5).restore()
    gauges = samples(metrics)
    assert gauges[("goalkeeper_last_tick_success_timestamp_seconds", ())] == 0
    assert not [name for name, _ in gauges if name == "goalkeeper_open_findings"]


async def test_state_store_up_follows_the_check(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await StateStore.open(f"sqlite+aiosqlite:///{path}")
    try:
        metrics = Metrics()
        watch = StoreWatch(store, metrics, timeout=5)
        assert samples(metrics)[("goalkeeper_state_store_up", ())] == 0  # unknown until checked
        assert await watch.check() is None
        assert samples(metrics)[("goalkeeper_state_store_up", ())] == 1
        await asyncio.to_thread(path.rename, tmp_path / "elsewhere.db")
        with capture_logs() as logged:
            for _ in range(2):
                problem = await watch.check()
                assert problem is not None and "is missing" in problem
        assert samples(metrics)[("goalkeeper_state_store_up", ())] == 0
        # Said once, not at every probe.
        assert [line["event"] for line in logged] == ["state store not usable"]
    finally:
        await store.aclose()


async def test_a_pass_runs_when_asked_not_only_on_the_interval(store: StateStore) -> None:
    metrics = Metrics()
    watch = StoreWatch(store, metrics, timeout=5, clock=lambda: T0 + timedelta(minutes=5))
    refreshed = asyncio.Event()
    original = watch.refresh

    async def refresh() -> bool:
        result = await original()
        refreshed.set()
        return result

    watch.refresh = refresh  # type: ignore[method-assign]
    running = asyncio.create_task(watch.run(3600))  # an interval no test would wait out
    try:
        await commit_mail(store)
        watch.refresh_soon()  # what the daemon does once a tick has stored its messages
        async with asyncio.timeout(10):
            await refreshed.wait()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    gauges = samples(metrics)
    assert gauges[email("goalkeeper_outbox_pending")] == 1
    assert gauges[email("goalkeeper_outbox_oldest_pending_age_seconds")] == 300
    assert gauges[("goalkeeper_state_store_up", ())] == 1


def test_a_tick_record_from_before_grades_reads_as_ungraded() -> None:
    record = TickRecord("success", 3, (("redis", 6379, "tcp", "reachable", 3),), 0)
    old = record.summary() | {"open_findings": [["redis", 6379, "tcp", 3]]}
    restored = TickRecord.from_summary(old)
    assert restored is not None
    assert restored.open_findings == (("redis", 6379, "tcp", "none", 3),)
