"""The provider's exceptions reload on SIGHUP (issue 16): the real daemon as a subprocess, its
static inventory and a real listener on loopback. With reminders due on every tick, the port is
mailed again until an exception in config covers it; then it is acknowledged, mailed no more,
and shown as such by GET /findings, /metrics and the Telegram summary."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from goalkeeper_sim.listeners import PortListeners
from tests.daemon_process import DaemonProcess
from tests.test_daemon import (  # the daemon's fixtures, shared rather than copied
    HOST,
    Setup,
    daemon_factory,  # noqa: F401 - a fixture
    listeners,  # noqa: F401 - a fixture
    run_tick,
    sent_on,
    setup,  # noqa: F401 - a fixture
)


async def test_a_provider_exception_added_on_sighup_silences_the_port(
    setup: Setup,  # noqa: F811 - the fixture
    listeners: PortListeners,  # noqa: F811 - the fixture
    daemon_factory: Callable[[Path], Awaitable[DaemonProcess]],  # noqa: F811 - the fixture
) -> None:
    config_path = setup.write_config([6379], notify__reminder_days=0)
    daemon = await daemon_factory(config_path)
    mark = len(daemon.lines)
    assert (await run_tick(daemon, setup))["mails"] == 1
    for channel in ("email", "telegram"):
        await daemon.wait_for("notification sent", after=mark, where=sent_on(channel))

    config = yaml.safe_load(config_path.read_text())
    # Far ahead, so capped at notify.max_exception_days from today: the daemon reads the clock.
    config["exceptions"] = [
        {"address": HOST, "ports": ["6379/tcp"], "until": "2099-12-31", "reason": "a honeypot"}
    ]
    config_path.write_text(yaml.safe_dump(config))
    mark = len(daemon.lines)
    daemon.signal(signal.SIGHUP)
    await daemon.wait_for("config reloaded", after=mark)
    finished = await run_tick(daemon, setup)
    assert (finished["findings"], finished["mails"]) == (1, 0)
    await daemon.wait_for("notification sent", after=mark, where=sent_on("telegram"))
    assert "accepted: 1" in setup.telegram.messages[-1].plain
    assert len(setup.smtp.messages) == 1

    status, body = await daemon.request("GET", "/findings", token=setup.admin_token)
    assert status == 200
    (finding,) = body["findings"]
    assert finding["status"] == "acknowledged"
    assert finding["exception"]["source"] == "provider"
    assert finding["exception"]["reason"] == "a honeypot"
    _, text = await daemon.request("GET", "/metrics")
    assert 'goalkeeper_acknowledged_findings{source="provider"} 1.0' in text
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(seconds=15) == 0
