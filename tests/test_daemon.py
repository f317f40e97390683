"""The real daemon as a subprocess: probes, metrics, admin API, SIGHUP, SIGTERM, channels.

Targets are loopback listeners on 127.43.0.0/16; the SMTP sink and the fake Telegram run in
the test's own loop. Every test also checks that no configured secret reached the logs.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from goalkeeper.model import Transport
from goalkeeper_sim.listeners import PortListeners
from goalkeeper_sim.smtp import SmtpSink
from goalkeeper_sim.telegram import FakeTelegram
from tests.daemon_process import DaemonProcess, children, free_port

HOST = "127.43.0.5"
METRICS = (
    "goalkeeper_ticks",
    "goalkeeper_tick_duration_seconds",
    "goalkeeper_last_tick_success_timestamp_seconds",
    "goalkeeper_targets",
    "goalkeeper_hosts_scanned",
    "goalkeeper_hosts_not_scanned",
    "goalkeeper_open_findings",
    "goalkeeper_notifications",
    "goalkeeper_notification_queue_depth",
    "goalkeeper_inventory_age_seconds",
    "goalkeeper_config_reloads",
    "goalkeeper_owners_unresolved",
    "goalkeeper_outbox_pending",
    "goalkeeper_outbox_oldest_pending_age_seconds",
    "goalkeeper_outbox_failed",
    "goalkeeper_state_store_up",
    "goalkeeper_unmonitored_findings",
    "goalkeeper_acknowledged_findings",
    "goalkeeper_delivery_duration_seconds",
    "goalkeeper_build_info",
    "process_resident_memory_bytes",  # the standard names stock dashboards and alerts use
    "process_open_fds",
    "python_info",
)


@dataclass
class Setup:
    tmp: Path
    smtp: SmtpSink
    telegram: FakeTelegram
    admin_token: str
    smtp_port: int
    telegram_url: str

    def write_config(
        self, ports: list[int], *, targets: list[dict[str, str]] | None = None, **overrides: Any
    ) -> Path:
        data: dict[str, Any] = {
            "environment": "prod",
            "scan": {
                "ports": [{"port": p, "protocol": "tcp", "service": f"svc{p}"} for p in ports],
                "allowed_networks": ["127.43.0.0/16"],
                "allow_loopback": True,
                "privileged": False,
                "nmap_arguments": "-Pn -n -T4 --max-retries 1 --host-timeout 30s",
            },
            "inventory": {"source": "static", "static_file": "inventory.yaml"},
            "notify": {
                "send_to_customers": True,
                "ops_email": "ops@provider.example",
                "sender": "Goalkeeper <ops@provider.example>",
                "email": {"host": "127.0.0.1", "port": self.smtp_port, "starttls": False,
                          "timeout": 3},
                "telegram": {"enabled": True, "chat_id": "-100123", "api_base": self.telegram_url},
            },
            "daemon": {"shutdown_timeout": 6},
            "state": {"url": f"sqlite+aiosqlite:///{self.tmp / 'state.db'}"},
            "logging": {"format": "json", "level": "info"},
        }  # fmt: skip
        for key, value in overrides.items():
            section, name = key.split("__")
            data.setdefault(section, {})[name] = value
        targets = targets or [
            {
                "address": HOST,
                "server_name": "db-1",
                "project_id": "p1",
                "owner_email": "owner@customer.example",
            }
        ]
        (self.tmp / "inventory.yaml").write_text(yaml.safe_dump({"targets": targets}))
        path = self.tmp / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def env(self) -> dict[str, str]:
        return {
            "GOALKEEPER_NOTIFY__TELEGRAM__TOKEN": self.telegram.token,
            "GOALKEEPER_HTTP__ADMIN_TOKEN": self.admin_token,
        }


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with SmtpSink() as smtp, FakeTelegram() as telegram:
        yield Setup(tmp_path, smtp, telegram, secrets.token_urlsafe(16), smtp.port, telegram.url)


@pytest.fixture
async def listeners() -> AsyncIterator[PortListeners]:
    endpoints = [(ip_address(HOST), 6379, Transport.TCP), (ip_address(HOST), 27017, Transport.TCP)]
    async with PortListeners(endpoints) as running:
        yield running


@pytest.fixture
async def daemon_factory(
    setup: Setup,
) -> AsyncIterator[Callable[[Path], Awaitable[DaemonProcess]]]:
    started: list[DaemonProcess] = []

    async def start(config_path: Path) -> DaemonProcess:
        process = DaemonProcess(config_path, env=setup.env())
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        await process.close()
        text = "\n".join(process.raw)
        for secret in (setup.admin_token, setup.telegram.token):
            assert secret not in text, "a configured secret reached the logs"


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def run_tick(daemon: DaemonProcess, setup: Setup) -> dict[str, Any]:
    mark = len(daemon.lines)
    status, body = await daemon.request("POST", "/scan", token=setup.admin_token)
    assert status == 202, body
    return await daemon.wait_for("tick finished", after=mark)


async def test_probes_metrics_admin_api_and_clean_stop(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    daemon = await daemon_factory(setup.write_config([6379]))
    assert (await daemon.request("GET", "/healthz"))[0] == 200
    assert (await daemon.request("GET", "/readyz"))[0] == 200

    status, text = await daemon.request("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    missing = [name for name in METRICS if name not in families]
    assert not missing, missing
    assert "_created" not in text
    if shutil.which("promtool"):  # Prometheus's own linter, on the real scrape
        lint = await asyncio.create_subprocess_exec(
            "promtool", "check", "metrics", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        said, _ = await lint.communicate(text.encode())
        assert lint.returncode == 0, said.decode()
    ticks = {s.labels["outcome"]: s.value for s in families["goalkeeper_ticks"].samples
             if s.name == "goalkeeper_ticks_total"}  # fmt: skip
    assert ticks == {"success": 0, "failure": 0, "cancelled": 0}

    assert (await daemon.request("POST", "/scan"))[0] == 401
    assert (await daemon.request("POST", "/scan", token="wrong"))[0] == 401
    mark = len(daemon.lines)
    first = await daemon.request("POST", "/scan", token=setup.admin_token)
    second = await daemon.request("POST", "/scan", token=setup.admin_token)
    assert first[0] == 202
    assert second[0] == 409  # nmap alone takes longer than two local requests
    finished = await daemon.wait_for("tick finished", after=mark)
    assert finished["findings"] == 1

    status, body = await daemon.request("GET", "/findings", token=setup.admin_token)
    assert status == 200
    assert [(f["address"], f["port"]) for f in body["findings"]] == [(HOST, 6379)]
    await daemon.wait_for(
        "notification sent", after=mark, where=lambda line: line["channel"] == "email"
    )
    assert [m.rcpt_tos for m in setup.smtp.messages] == [("owner@customer.example",)]
    await daemon.wait_for(
        "notification sent", after=mark, where=lambda line: line["channel"] == "telegram"
    )
    assert HOST in setup.telegram.messages[-1].plain

    status, text = await daemon.request("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in families.values() for s in f.samples}  # fmt: skip
    assert values[("goalkeeper_ticks_total", (("outcome", "success"),))] == 1
    assert values[("goalkeeper_hosts_scanned_total", ())] == 1
    # Verified: the simulator's 6379 answers as Redis, not as the svc6379 the config names.
    labels = (("grade", "unconfirmed"), ("port", "6379"), ("protocol", "tcp"),
              ("service", "svc6379"))  # fmt: skip
    assert values[("goalkeeper_open_findings", labels)] == 1

    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(seconds=15) == 0
    assert any(line.get("event") == "stopped" for line in daemon.lines)


async def test_sighup_swaps_the_port_list_and_keeps_it_when_the_file_is_broken(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    config_path = setup.write_config([6379])
    daemon = await daemon_factory(config_path)
    assert (await run_tick(daemon, setup))["findings"] == 1

    setup.write_config([6379, 27017])
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    await daemon.wait_for("config reloaded", after=mark)
    assert (await run_tick(daemon, setup))["findings"] == 2

    config_path.write_text(config_path.read_text() + "\nbogus_section: {}\n")
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    failed = await daemon.wait_for("config reload failed: keeping the running config", after=mark)
    assert any("bogus_section" in p for p in failed["problems"])
    assert (await daemon.request("GET", "/healthz"))[0] == 200
    assert (await daemon.request("GET", "/readyz"))[0] == 200
    assert (await run_tick(daemon, setup))["findings"] == 2  # the old list is still in force
    _, text = await daemon.request("GET", "/metrics")
    assert 'goalkeeper_config_reloads_total{outcome="failure"} 1.0' in text
    assert 'goalkeeper_config_reloads_total{outcome="success"} 1.0' in text
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(seconds=15) == 0


def sent_on(channel: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: bool(line["channel"] == channel)


async def test_a_port_taken_off_the_list_on_sighup_is_unmonitored_not_resolved(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    """The issue's own case: 27017 leaves scan.ports while its listener still runs."""
    config_path = setup.write_config([6379, 27017])
    daemon = await daemon_factory(config_path)
    mark = len(daemon.lines)
    assert (await run_tick(daemon, setup))["findings"] == 2
    for channel in ("email", "telegram"):  # both sent before the next tick's are awaited
        await daemon.wait_for("notification sent", after=mark, where=sent_on(channel))
    assert len(setup.smtp.messages) == 1

    setup.write_config([6379])
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    await daemon.wait_for("config reloaded", after=mark)
    finished = await run_tick(daemon, setup)
    assert (finished["findings"], finished["resolved"], finished["unmonitored"]) == (1, 0, 1)
    assert finished["mails"] == 0  # no "Closed since our last report (thank you)"
    await daemon.wait_for(
        "notification sent", after=mark, where=lambda line: line["channel"] == "telegram"
    )
    assert "No longer monitored: 1" in setup.telegram.messages[-1].plain

    status, body = await daemon.request("GET", "/findings", token=setup.admin_token)
    assert status == 200
    assert {(f["port"], f["status"], f["unmonitored_reason"]) for f in body["findings"]} == {
        (6379, "open", None),
        (27017, "unmonitored", "port no longer on the scan list"),
    }
    _, text = await daemon.request("GET", "/metrics")
    assert 'goalkeeper_unmonitored_findings{reason="port no longer on the scan list"} 1.0' in text
    assert len(setup.smtp.messages) == 1
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(seconds=15) == 0


async def test_sigterm_during_a_tick_exits_in_time_and_kills_nmap(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    # 4,094 hosts (a /20 less its network and broadcast) at a ceiling of 200 packets/s: the
    # tick cannot finish before the deadline.
    daemon = await daemon_factory(
        setup.write_config(
            [6379, 27017],
            targets=[{"network": "127.43.0.0/20", "server_name": "pool", "project_id": "p1"}],
            scan__max_rate=200,
            scan__max_rate_per_subnet=200,
        )
    )
    mark = len(daemon.lines)
    assert (await daemon.request("POST", "/scan", token=setup.admin_token))[0] == 202
    await daemon.wait_for("tick started", after=mark)
    nmaps: list[int] = []
    for _ in range(200):  # nmap is another process: its start cannot be awaited
        nmaps = children(daemon.pid, "nmap")
        if nmaps:
            break
        await asyncio.sleep(0.05)
    assert nmaps, "the tick never started nmap:\n" + daemon.log_text()

    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert (await daemon.request("GET", "/readyz"))[0] == 503
    code = await daemon.wait_exit(seconds=20)
    elapsed = time.monotonic() - started
    assert code == 0, daemon.log_text()
    assert elapsed < 6 + 4, f"shutdown took {elapsed:.1f} s"
    assert not [pid for pid in nmaps if alive(pid)], "nmap outlived the daemon"
    assert any(line.get("event") == "tick cancelled" for line in daemon.lines)
    print(f"shutdown during a tick took {elapsed:.2f} s")


async def test_smtp_down_does_not_block_telegram(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    setup.smtp_port = free_port()  # nothing listens there
    daemon = await daemon_factory(setup.write_config([6379]))
    mark = len(daemon.lines)
    await run_tick(daemon, setup)
    await daemon.wait_for(
        "notification sent", after=mark, where=lambda line: line["channel"] == "telegram"
    )
    assert setup.telegram.messages and HOST in setup.telegram.messages[-1].plain
    assert setup.smtp.messages == []
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(seconds=15) == 0


async def test_telegram_down_does_not_block_mail(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    setup.telegram_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    daemon = await daemon_factory(setup.write_config([6379]))
    mark = len(daemon.lines)
    await run_tick(daemon, setup)
    await daemon.wait_for(
        "notification sent", after=mark, where=lambda line: line["channel"] == "email"
    )
    assert [m.rcpt_tos for m in setup.smtp.messages] == [("owner@customer.example",)]
    assert setup.telegram.messages == []
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(seconds=15) == 0


async def test_messages_survive_sigkill_and_are_sent_exactly_once(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    smtp_port, setup.smtp_port = setup.smtp_port, free_port()  # the mail server is down
    config_path = setup.write_config([6379])
    first = await daemon_factory(config_path)
    mark = len(first.lines)
    await run_tick(first, setup)  # the outbox is committed before anything is sent
    await first.wait_for(
        "notification sent", after=mark, where=lambda line: line["channel"] == "telegram"
    )
    first.signal(signal.SIGKILL)  # while the mail is still being retried
    assert await first.wait_exit(seconds=10) == -signal.SIGKILL
    assert setup.smtp.messages == []

    setup.smtp_port = smtp_port  # the mail server is back
    setup.write_config([6379])
    second = await daemon_factory(config_path)
    await second.wait_for("notification sent", where=lambda line: line["channel"] == "email")
    assert [m.rcpt_tos for m in setup.smtp.messages] == [("owner@customer.example",)]
    assert len(setup.telegram.messages) == 1  # sent before the kill, never again
    status, body = await second.request("GET", "/findings", token=setup.admin_token)
    assert status == 200
    assert [f["times_notified"] for f in body["findings"]] == [1]
    second.signal(signal.SIGTERM)
    assert await second.wait_exit(seconds=15) == 0
    assert len(setup.smtp.messages) == 1


async def test_the_schedule_drives_the_same_tick(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    config_path = setup.write_config(
        [6379], schedule__run_at_start=True, schedule__cron="30 4 * * 1", schedule__timezone="UTC"
    )
    daemon = await daemon_factory(config_path)
    started = await daemon.wait_for("tick started")
    assert started["reason"] == "start"  # not the admin API: nobody called it
    assert (await daemon.wait_for("tick finished"))["findings"] == 1
    await daemon.wait_for("notification sent", where=lambda line: line["channel"] == "email")
    assert [m.rcpt_tos for m in setup.smtp.messages] == [("owner@customer.example",)]
    status, body = await daemon.request("GET", "/healthz")
    assert status == 200
    next_tick = datetime.fromisoformat(body["next_tick"])
    assert (next_tick.weekday(), next_tick.hour, next_tick.minute) == (0, 4, 30)
    assert next_tick > datetime.fromisoformat(started["timestamp"])  # the daemon's clock
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(seconds=15) == 0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_pending_mail_and_the_last_tick_survive_a_restart(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    setup.smtp_port = free_port()  # the mail server is down, and stays down
    config_path = setup.write_config([6379])
    first = await daemon_factory(config_path)
    await run_tick(first, setup)
    before = samples((await first.request("GET", "/metrics"))[1])
    success = ("goalkeeper_last_tick_success_timestamp_seconds", ())
    assert before[success] > 0
    first.signal(signal.SIGKILL)
    assert await first.wait_exit(seconds=10) == -signal.SIGKILL

    second = await daemon_factory(config_path)
    after = samples((await second.request("GET", "/metrics"))[1])
    email = (("channel", "email"),)
    # The process's own counters start again from zero and say nothing of the outage...
    assert after[("goalkeeper_notifications_total", (*email, ("outcome", "failed")))] == 0
    # ...the store does: the mail still waits, since the first tick.
    assert after[("goalkeeper_outbox_pending", email)] == 1
    assert after[("goalkeeper_outbox_oldest_pending_age_seconds", email)] > 0
    assert after[("goalkeeper_state_store_up", ())] == 1
    assert after[success] == before[success]
    assert after[("goalkeeper_targets", ())] == 1
    labels = (("grade", "unconfirmed"), ("port", "6379"), ("protocol", "tcp"),
              ("service", "svc6379"))  # fmt: skip
    finding = ("goalkeeper_open_findings", labels)
    assert after[finding] == before[finding] == 1
    second.signal(signal.SIGTERM)
    assert await second.wait_exit(seconds=15) == 0


async def test_a_replaced_state_file_is_not_ready_and_its_tick_fails(
    setup: Setup,
    listeners: PortListeners,
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],
) -> None:
    daemon = await daemon_factory(setup.write_config([6379]))
    status, body = await daemon.request("GET", "/readyz")
    assert (status, body["state_store"]) == (200, True)

    database = setup.tmp / "state.db"
    await asyncio.to_thread(database.rename, setup.tmp / "moved.db")
    await asyncio.to_thread(shutil.copyfile, setup.tmp / "moved.db", database)
    await asyncio.to_thread((setup.tmp / "state.db-wal").unlink)

    status, body = await daemon.request("GET", "/readyz")
    assert status == 503
    assert body["state_store"] is False
    assert "was replaced since this process opened it" in body["state_store_problem"]

    mark = len(daemon.lines)
    assert (await daemon.request("POST", "/scan", token=setup.admin_token))[0] == 202
    failed = await daemon.wait_for("tick failed", after=mark)
    assert "replaced" in failed["error"]
    assert not [line for line in daemon.lines[mark:] if line.get("event") == "tick finished"]
    values = samples((await daemon.request("GET", "/metrics"))[1])
    assert values[("goalkeeper_ticks_total", (("outcome", "failure"),))] == 1
    assert values[("goalkeeper_ticks_total", (("outcome", "success"),))] == 0
    assert values[("goalkeeper_last_tick_success_timestamp_seconds", ())] == 0
    assert values[("goalkeeper_state_store_up", ())] == 0
    assert (await daemon.request("GET", "/readyz"))[0] == 503  # and it never claims 200 again
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(seconds=15) == 0


async def test_a_failing_tick_logs_its_traceback(
    setup: Setup, daemon_factory: Callable[[Path], Awaitable[DaemonProcess]]
) -> None:
    daemon = await daemon_factory(setup.write_config([6379]))
    # The static file is read at every tick: broken now, the tick itself fails.
    (setup.tmp / "inventory.yaml").write_text("targets: [{bogus: 1}]\n")
    mark = len(daemon.lines)
    status, body = await daemon.request("POST", "/scan", token=setup.admin_token)
    assert status == 202, body
    failed = await daemon.wait_for("tick failed", after=mark)
    assert failed["level"] == "error"
    assert "targets[0]" in failed["error"]
    trace = failed["exception"]
    assert trace.startswith("Traceback (most recent call last):"), trace
    assert "read_static_targets" in trace and "ConfigError" in trace
