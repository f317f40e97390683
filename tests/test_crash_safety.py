"""Crash safety: the real daemon, SIGKILLed at 21 chosen points during delivery and commit.

Three histories of eight owners each (one open Redis port apiece, on loopback listeners in
127.47.0.0/16) run side by side, each with its own store and its own real SMTP server
(aiosmtpd). Every history is a chain of daemon processes: each one is started (with a tick at
start, a tick asked for by POST /scan, or no tick at all), killed at its planned point, and the
next one started on the same store; the last one is left to finish and stopped with SIGTERM.

Kill points are chosen deterministically: the SMTP server kills the daemon at the N-th DATA
command of that process, before answering it (the mail was never accepted) or right after its
250 (the documented at-least-once window: that one mail may come again); or the daemon kills
itself at a named point through the test-only hook in goalkeeper.crashpoints (inside the
commit, after it, after a mark-sent). While a commit kill is planned the server answers 451, so
that the waiting mails are still waiting when the commit comes.

Afterwards, per history: nothing is pending or failed in the store, every owner got a mail
(0 lost), and no owner got more than one, except once per kill inside a 250 window that hit
that owner's mail. Mails are counted per recipient and per run.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from goalkeeper.crashpoints import CRASH_VARIABLE
from goalkeeper.model import Transport
from goalkeeper.state import StateStore
from goalkeeper_sim.listeners import PortListeners
from tests.daemon_process import DaemonProcess, free_port

OWNERS = 8
ADMIN_TOKEN = "crash-test-admin-token"
Start = Literal["quiet", "at_start", "post_scan"]  # no tick / run_at_start / POST /scan


@dataclass(frozen=True)
class Kill:
    """Where one daemon process dies. `smtp`: at its `data`-th DATA command, `before` the
    reply or `delay` seconds `after` the 250; `hook`: at goalkeeper.crashpoints' point."""

    smtp: Literal["before", "after"] | None = None
    data: int = 1
    delay: float = 0.0
    hook: str | None = None  # "commit", "committed", "marked" (":N" for the N-th time)
    refuse: bool = False  # the server answers 451 meanwhile


@dataclass(frozen=True)
class Step:
    start: Start
    kill: Kill | None  # None: the last process, stopped with SIGTERM


HISTORIES: dict[str, tuple[float, list[Step]]] = {  # name: (seconds per DATA, steps)
    "delivery kills": (0.0, [
        Step("at_start", Kill(smtp="after", data=2)),
        Step("quiet", Kill(smtp="before")),
        Step("quiet", Kill(smtp="after", delay=0.002)),
        Step("post_scan", Kill(smtp="after")),
        Step("at_start", Kill(hook="marked")),
        Step("quiet", Kill(smtp="before")),
        Step("quiet", Kill(smtp="after", delay=0.001)),
        Step("quiet", None),
    ]),
    "commit kills": (0.0, [
        Step("at_start", Kill(hook="commit")),
        Step("post_scan", Kill(hook="committed")),
        Step("at_start", Kill(hook="commit", refuse=True)),
        Step("quiet", Kill(smtp="after", data=3)),
        Step("at_start", Kill(hook="committed", refuse=True)),
        Step("quiet", Kill(smtp="before", data=2)),
        Step("at_start", Kill(smtp="after", delay=0.002)),
        Step("at_start", None),
    ]),
    "new ticks over a slow relay": (0.03, [
        Step("at_start", Kill(smtp="after")),
        Step("at_start", Kill(smtp="before", data=2)),
        Step("post_scan", Kill(smtp="after", data=2, delay=0.003)),
        Step("at_start", Kill(hook="marked")),
        Step("post_scan", Kill(smtp="after")),
        Step("at_start", Kill(hook="commit", refuse=True)),
        Step("quiet", Kill(smtp="before")),
        Step("post_scan", None),
    ]),
}  # fmt: skip


@dataclass(frozen=True)
class Received:
    recipient: str
    message_id: str
    run: str


@dataclass
class KillingServer:
    """aiosmtpd hooks that keep mail and carry out the current process's SMTP kill point.

    They run on the controller's thread: shared state takes the lock, and the test's loop is
    told of each mail through `call_soon_threadsafe`.
    """

    slow: float
    loop: asyncio.AbstractEventLoop
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    mails: list[Received] = field(default_factory=list)
    windows: Counter[str] = field(default_factory=Counter)  # recipient: kills after its 250
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _kill: Kill | None = None
    _pid: Callable[[], int | None] = lambda: None
    _data: int = 0

    def arm(self, kill: Kill | None, pid: Callable[[], int | None]) -> None:
        with self._lock:
            self._kill, self._data, self._pid = kill, 0, pid

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self._lock:
            refuse = self._kill is not None and self._kill.refuse
        if refuse:
            return "451 4.3.0 Temporary local problem (simulated)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.slow:
            await asyncio.sleep(self.slow)  # a slow relay: the daemon waits on it
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            self._data += 1
            kill, pid = self._kill, self._pid()
            due = kill is not None and kill.smtp is not None and self._data == kill.data
            if due and kill is not None and kill.smtp == "before" and pid is not None:
                self._kill = None
                os.kill(pid, signal.SIGKILL)  # no reply: the mail was never accepted
                return "451 4.3.0 never read"
            received = Received(
                envelope.rcpt_tos[0], str(message["Message-ID"]), str(message["X-Goalkeeper-Run"])
            )
            self.mails.append(received)
            if due and kill is not None and pid is not None:
                self._kill = None
                self.windows[received.recipient] += 1
                # After the 250 below has been written: aiosmtpd pushes it before it next yields.
                asyncio.get_running_loop().call_later(kill.delay, os.kill, pid, signal.SIGKILL)
        self.loop.call_soon_threadsafe(self.changed.set)
        return "250 2.0.0 OK: queued"


def owner(history: int, n: int) -> str:
    return f"owner{n}@h{history}.example"


def address(history: int, n: int) -> str:
    return f"127.47.{history}.{n + 1}"


def write_config(tmp: Path, history: int, smtp_port: int, *, run_at_start: bool) -> Path:
    targets = [
        {"address": address(history, n), "server_name": f"db-{n}", "project_id": f"p{n}",
         "owner_email": owner(history, n)}
        for n in range(OWNERS)
    ]  # fmt: skip
    (tmp / "inventory.yaml").write_text(yaml.safe_dump({"targets": targets}))
    data = {
        "environment": "prod",
        "schedule": {"run_at_start": run_at_start},
        "scan": {"ports": [{"port": 6379, "protocol": "tcp", "service": "redis"}],
                 "allowed_networks": ["127.47.0.0/16"], "allow_loopback": True,
                 "privileged": False,
                 "nmap_arguments": "-Pn -n -T4 --max-retries 1 --host-timeout 30s"},
        "inventory": {"source": "static", "static_file": "inventory.yaml"},
        "notify": {"send_to_customers": True, "ops_email": "ops@provider.example",
                   "sender": "Goalkeeper <ops@provider.example>", "reminder_days": 1,
                   "email": {"host": "127.0.0.1", "port": smtp_port, "starttls": False,
                             "timeout": 3}},
        "daemon": {"shutdown_timeout": 8},
        "state": {"url": f"sqlite+aiosqlite:///{tmp / 'state.db'}"},
        "logging": {"format": "json", "level": "info"},
    }  # fmt: skip
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def run_step(step: Step, tmp: Path, history: int, server: KillingServer, port: int) -> None:
    config = write_config(tmp, history, port, run_at_start=step.start == "at_start")
    env = {"GOALKEEPER_HTTP__ADMIN_TOKEN": ADMIN_TOKEN}
    kill = step.kill
    if kill is not None and kill.hook is not None:
        env[CRASH_VARIABLE] = kill.hook
    pending = await stored_pending(tmp)
    daemon = DaemonProcess(config, env=env)
    server.arm(kill, lambda: daemon.process.pid if daemon.process else None)
    try:
        try:
            await daemon.start()
        except AssertionError:
            if kill is None:
                raise
        if step.start == "post_scan":
            try:
                await daemon.request("POST", "/scan", token=ADMIN_TOKEN)
            except OSError:  # already killed, by the pass over what was pending
                assert kill is not None, daemon.log_text()
        if kill is not None:
            code = await daemon.wait_exit(30)
            assert code == -signal.SIGKILL, daemon.log_text()
            return
        if pending:
            await daemon.wait_for("sending pending messages")
        if step.start != "quiet":
            await daemon.wait_for("tick finished")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(30) == 0, daemon.log_text()
    finally:
        await daemon.close()


async def stored_pending(tmp: Path) -> int:
    if not (tmp / "state.db").exists():
        return 0
    store = await StateStore.open(f"sqlite+aiosqlite:///{tmp / 'state.db'}")
    try:
        return len(await store.pending())
    finally:
        await store.aclose()


async def run_history(tmp: Path, history: int, slow: float, steps: list[Step]) -> KillingServer:
    server = KillingServer(slow=slow, loop=asyncio.get_running_loop())
    port = free_port()
    controller = Controller(server, hostname="127.0.0.1", port=port)
    await asyncio.to_thread(controller.start)
    try:
        for step in steps:
            await run_step(step, tmp, history, server, port)
    finally:
        await asyncio.to_thread(controller.stop)
    return server


@pytest.fixture
async def listeners() -> AsyncIterator[PortListeners]:
    endpoints = [
        (ip_address(address(h, n)), 6379, Transport.TCP)
        for h in range(len(HISTORIES))
        for n in range(OWNERS)
    ]
    async with PortListeners(endpoints) as running:
        yield running


async def test_sigkill_at_21_points_loses_nothing_and_repeats_only_the_250_window(
    tmp_path: Path, listeners: PortListeners
) -> None:
    kills = sum(1 for _, steps in HISTORIES.values() for step in steps if step.kill)
    assert kills >= 20
    folders = [tmp_path / f"h{h}" for h in range(len(HISTORIES))]
    for folder in folders:
        folder.mkdir()
    servers = await asyncio.gather(
        *(
            run_history(folders[h], h, slow, steps)
            for h, (slow, steps) in enumerate(HISTORIES.values())
        )
    )
    for h, (name, server) in enumerate(zip(HISTORIES, servers, strict=True)):
        store = await StateStore.open(f"sqlite+aiosqlite:///{folders[h] / 'state.db'}")
        try:
            left = await store.pending()
            failed = await store.failed_since(datetime(2000, 1, 1, tzinfo=UTC))
        finally:
            await store.aclose()
        assert left == [], f"{name}: still pending after the last stop"
        assert failed == [], f"{name}: given up: {[m.last_error for m in failed]}"
        per_owner = Counter(m.recipient for m in server.mails)
        owners = {owner(h, n) for n in range(OWNERS)}
        assert set(per_owner) == owners, f"{name}: lost: {sorted(owners - set(per_owner))}"
        repeats = {o: c - 1 for o, c in per_owner.items() if c > 1}
        beyond = {o: r for o, r in repeats.items() if r > server.windows[o]}
        assert not beyond, f"{name}: mailed twice outside a 250 window: {beyond}, {server.mails}"
        per_run = Counter((m.recipient, m.run) for m in server.mails)
        twice = {k: c for k, c in per_run.items() if c > 1 + server.windows[k[0]]}
        assert not twice, f"{name}: one run mailed an owner twice: {twice}"


def test_the_crash_hook_is_inert_unless_asked_for() -> None:
    script = (
        "from goalkeeper.crashpoints import crash_point\n"
        "crash_point('commit'); print('once', flush=True)\n"
        "crash_point('marked'); crash_point('commit'); print('twice', flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != CRASH_VARIABLE}
    quiet = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert (quiet.returncode, quiet.stdout.split()) == (0, ["once", "twice"])
    armed = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, CRASH_VARIABLE: "commit:2"},
        capture_output=True,
        text=True,
    )
    assert (armed.returncode, armed.stdout.split()) == (-signal.SIGKILL, ["once"])
