"""Progress a person can follow: the scanner's and the delivery's reports, the terminal bar, and
the log lines of a long batch and of a long wait to retry."""

from __future__ import annotations

import asyncio
import io
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from goalkeeper import aio
from goalkeeper.delivery import Delivery
from goalkeeper.metrics import Metrics
from goalkeeper.model import DeliveryError, OutgoingMail, PortSpec, Transport
from goalkeeper.progress import SILENT, terminal_bar
from goalkeeper.scanning import nmap as nmap_module
from goalkeeper.scanning.nmap import NmapScanner
from goalkeeper.scanning.planner import Batch
from goalkeeper.state import NewMessage, StateStore
from goalkeeper_sim.listeners import PortListeners
from tests.test_nmap_scanner import addr, settings

REDIS = PortSpec(port=6379, protocol=Transport.TCP, service="redis")
T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


class Recorder:
    """A Progress that writes down what it is told."""

    def __init__(self) -> None:
        self.planned = 0
        self.scanned: list[int] = []
        self.queued = 0
        self.settled: list[bool] = []

    def hosts_planned(self, count: int) -> None:
        self.planned += count

    def hosts_scanned(self, count: int) -> None:
        self.scanned.append(count)

    def messages_queued(self, count: int) -> None:
        self.queued += count

    def message_settled(self, *, sent: bool) -> None:
        self.settled.append(sent)


def progress_line(percent: float) -> bytes:
    # The line nmap 7.93 writes into -oX output every --stats-every (taken from a real run).
    return (
        f'<taskprogress task="SYN Stealth Scan" time="1796222104" percent="{percent:.2f}" '
        'remaining="2" etc="1796222105"/>\n'
    ).encode()


async def test_a_batch_reports_its_hosts_from_nmaps_progress_lines_and_never_goes_back() -> None:
    hosts = tuple(addr(f"198.51.100.{n}") for n in range(1, 201))
    batch = Batch(subnets=(), addresses=hosts, index=0)
    recorder = Recorder()
    with capture_logs() as logged:
        watch = nmap_module._BatchWatch(batch, nmap_module.log.bind(batch=0), recorder)
        for line in (progress_line(25.0), b"<host>\n", progress_line(10.0), progress_line(50.5)):
            watch.line(line)
        watch.finished()

    assert recorder.scanned == [50, 51, 99]  # 25 %, (a retry's 10 % says nothing), 50.5 %, end
    assert sum(recorder.scanned) == len(hosts)
    assert logged == []  # within PROGRESS_LOG_SECONDS of the start: no log line yet


async def test_a_long_batch_logs_its_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nmap_module, "PROGRESS_LOG_SECONDS", 0.0)
    batch = Batch(subnets=(), addresses=(addr("198.51.100.1"),), index=3)
    with capture_logs() as logged:
        watch = nmap_module._BatchWatch(batch, nmap_module.log.bind(batch=3), SILENT)
        watch.line(progress_line(42.0))

    assert logged == [
        {
            "event": "nmap.progress",
            "batch": 3,
            "task": "SYN Stealth Scan",
            "percent": 42.0,
            "log_level": "info",
        }
    ]


async def test_a_real_scan_reports_every_host_and_logs_each_batch() -> None:
    hosts = [addr(f"127.42.{third}.{n}") for third in (60, 61) for n in range(1, 5)]
    recorder = Recorder()
    scan_settings = settings(privileged=False, batch_size=4)
    with capture_logs() as logged:
        async with (
            PortListeners([(hosts[0], REDIS.port, REDIS.protocol)]),
            NmapScanner(scan_settings, progress=recorder) as scanner,
        ):
            result = await scanner.scan(hosts, [REDIS])

    assert len(result.open_ports) == 1
    assert recorder.planned == len(hosts)
    assert sum(recorder.scanned) == len(hosts)
    batches = [e for e in logged if e["event"] == "nmap.batch"]
    assert sorted(e["batch"] for e in batches) == [0, 1]
    assert {e["log_level"] for e in batches} == {"info"}


class FlakyMailer:
    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def send(self, mail: OutgoingMail) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError("451 try again later", permanent=False)


async def test_delivery_reports_each_message_and_says_while_it_waits_to_retry(
    tmp_path: Path,
) -> None:
    store = await StateStore.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    mails = [
        OutgoingMail(recipient=f"c{n}@customer.example", sender="ops@p.example", subject="s",
                     text="t", html="<p>t</p>", message_id=f"<m{n}@p.example>")
        for n in range(2)
    ]  # fmt: skip
    await store.commit_tick(
        run_id="r1", started_at=T0, upserts=[],
        messages=[NewMessage.email(m, recipient_key=m.recipient) for m in mails],
    )  # fmt: skip
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    recorder = Recorder()
    delivery = Delivery(store=store, mailer=FlakyMailer(failures=1), chat=None, metrics=Metrics(),
                        wait=True, backoff_base=50.0, sleep=fake_sleep, clock=lambda: T0,
                        progress=recorder)  # fmt: skip
    try:
        with capture_logs() as logged:
            async with delivery.running():
                results = await delivery.submit(await store.pending())
    finally:
        await store.aclose()

    assert list(results.values()) == [None, None]
    assert recorder.queued == 2
    assert recorder.settled == [True, True]
    waits = [e for e in logged if e["event"] == "notification retry waits"]
    # One wait of 25..50 s, said at its start and again after 30 s when it is longer.
    assert sum(slept) == pytest.approx(waits[0]["retry_in_s"], abs=0.1)
    assert len(waits) == len(slept) and all(step <= 30 for step in slept)
    assert {e["log_level"] for e in waits} == {"info"}


async def test_sleep_noting_says_at_least_every_30_seconds() -> None:
    slept: list[float] = []
    noted: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    await aio.sleep_noting(fake_sleep, 65.0, noted.append)

    assert slept == [30.0, 30.0, 5.0]
    assert noted == [65.0, 35.0, 5.0]


async def test_no_bar_when_the_stream_is_not_a_terminal() -> None:
    with terminal_bar(io.StringIO()) as bar:
        assert bar is SILENT


async def test_a_terminal_gets_bars_for_hosts_and_messages() -> None:
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal, terminal_bar(terminal) as bar:
        bar.hosts_planned(8)
        bar.hosts_scanned(8)
        bar.messages_queued(3)
        bar.message_settled(sent=True)
        bar.message_settled(sent=False)
        bar.message_settled(sent=True)
        await asyncio.sleep(0)
    shown = read_all(leader)

    assert "hosts scanned" in shown and "8/8" in shown
    assert "messages sent (1 not sent)" in shown and "3/3" in shown


def read_all(fd: int) -> str:
    chunks: list[bytes] = []
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")
