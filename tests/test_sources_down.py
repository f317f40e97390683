"""A restart while OpenStack or Fleio is down, with a mail pending: the real daemon stays up.

Before, the send-time owner check let the inventory error end the mail workers, so the daemon
exited within a fraction of a second of every start: a crash loop that sent nothing. Now the
check waits and retries with backoff (logged, counted in a metric), and the mail goes out once
the source answers again. The simulated APIs fail through their fault injection
(goalkeeper_sim/faults.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from goalkeeper.delivery import Delivery
from goalkeeper.inventory.cloud import InventoryUnavailable
from goalkeeper.metrics import Metrics
from goalkeeper.model import OutgoingMail
from goalkeeper.state import NewMessage, OutboxMessage, StateStore
from goalkeeper_sim.cloud import SIM_CLOUD_NAME, SimulatedCloud
from goalkeeper_sim.fleio import API_ROOT
from goalkeeper_sim.smtp import SmtpSink
from goalkeeper_sim.world import DEFAULT_ADDRESS_BASE, build_world
from tests.daemon_process import DaemonProcess

CUSTOMER = "pending@customer.example"
OPS = "ops@provider.example"
FLEIO_DOWN = {f"{API_ROOT}/{p}": 503 for p in ("openstack/projects", "billing/services", "clients")}
OPENSTACK_DOWN = {"/network/v2.0/ports": 503, "/network/v2.0/floatingips": 503}


@pytest.fixture
async def cloud() -> AsyncIterator[SimulatedCloud]:
    async with SimulatedCloud(
        build_world(3, projects=3, servers_per_project=2), listeners=False
    ) as sim:
        yield sim


async def pending_mail(url: str) -> None:
    """A mail a stopped daemon left pending; its address is not in the cloud (any check will do)."""
    store = await StateStore.open(url)
    try:
        mail = OutgoingMail(
            recipient=CUSTOMER, sender=f"Goalkeeper <{OPS}>", subject="[prod] 1 dangerous port",
            text="Redis is open.", html="<p>Redis is open.</p>", message_id="<m1@provider.example>",
        )  # fmt: skip
        message = NewMessage.email(
            mail, recipient_key=CUSTOMER, finding_keys=[("127.99.0.1", 6379, "tcp")]
        )
        now = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
        await store.commit_tick(run_id="run-0", started_at=now, upserts=[], messages=[message])
    finally:
        await store.aclose()


def metric(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


@pytest.mark.parametrize("down", ["fleio", "openstack"])
async def test_a_restart_with_the_inventory_down_waits_and_then_delivers(
    tmp_path: Path, cloud: SimulatedCloud, down: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await pending_mail(url)
    faults = cloud.fleio.faults if down == "fleio" else cloud.openstack.faults
    injected = FLEIO_DOWN if down == "fleio" else OPENSTACK_DOWN
    faults.update(injected)
    async with SmtpSink() as smtp:
        config = {
            "environment": "prod",
            "schedule": {"cron": "0 6 1 1 *", "run_at_start": False},
            "scan": {
                "allowed_networks": [DEFAULT_ADDRESS_BASE],
                "allow_loopback": True,
                "privileged": False,
            },
            "inventory": {
                "source": "openstack",
                "openstack": {"cloud": SIM_CLOUD_NAME, "api_timeout": 10},
                "fleio": {"url": cloud.fleio_url},
            },
            "notify": {
                "send_to_customers": True, "ops_email": OPS, "sender": f"Goalkeeper <{OPS}>",
                "email": {"host": smtp.host, "port": smtp.port, "starttls": False, "timeout": 5},
            },
            "state": {"url": url},
            "logging": {"format": "json", "level": "info"},
        }  # fmt: skip
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {
            "GOALKEEPER_INVENTORY__FLEIO__TOKEN": cloud.fleio_token,
            "OS_CLIENT_CONFIG_FILE": str(cloud.write_clouds_yaml(tmp_path / "clouds.yaml")),
        }
        daemon = DaemonProcess(path, env=env)
        try:
            await daemon.start()
            first = await daemon.wait_for("owner check failed: the mail waits")
            assert first["recipient"] == CUSTOMER and first["attempt"] == 1
            index = daemon.lines.index(first)
            second = await daemon.wait_for("owner check failed: the mail waits", after=index + 1)
            assert second["attempt"] == 2
            assert daemon.process is not None and daemon.process.returncode is None
            status, health = await daemon.request("GET", "/healthz")
            assert status == 200, health
            status, text = await daemon.request("GET", "/metrics")
            assert metric(text, "goalkeeper_owner_check_failures_total") >= 2
            assert smtp.messages == []  # nobody checked the owner: nothing went out

            for key in injected:  # the source is back
                del faults[key]
            sent = await daemon.wait_for(
                "notification sent", where=lambda line: line.get("recipient") == CUSTOMER
            )
            assert sent["channel"] == "email"
            assert [m.rcpt_tos for m in smtp.messages] == [(CUSTOMER,)]
            assert daemon.process.returncode is None
        finally:
            await daemon.close()


async def test_a_one_off_run_gives_up_checking_and_leaves_the_mail_pending(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    await pending_mail(url)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def unavailable(message: OutboxMessage) -> list[OutboxMessage] | None:
        raise InventoryUnavailable("inventory unavailable: Fleio /clients page 1: HTTP 503")

    class Refuse:
        async def send(self, mail: OutgoingMail) -> None:
            raise AssertionError("sent without an owner check")

    store = await StateStore.open(url)
    try:
        metrics = Metrics()
        delivery = Delivery(
            store=store, mailer=Refuse(), chat=None, metrics=metrics, wait=True,
            reroute=unavailable, owner_check_attempts=3, sleep=fake_sleep,
        )  # fmt: skip
        async with delivery.running():
            (result,) = (await delivery.submit(await store.pending())).values()
        assert result is not None and "could not be checked" in result and "HTTP 503" in result
        assert len(sleeps) == 2 and sleeps[0] <= 2 < sleeps[1] * 2  # backoff between checks
        assert metrics.registry.get_sample_value("goalkeeper_owner_check_failures_total") == 3
        (pending,) = await store.pending()
        assert pending.recipient == CUSTOMER and pending.attempts == 0
    finally:
        await store.aclose()
