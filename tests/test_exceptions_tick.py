"""Exceptions end to end (issue 16): real ticks, through openstacksdk, against the simulated
cloud, with a fake clock. The simulator gives one server `goalkeeper.allow` metadata accepting
53/udp (and leaves its Redis open) and another a value that cannot be read; which servers those
are is read from the world, never written down here. DNS on 53/udp needs a UDP scan (raw
sockets) and a listener below port 1024: root, as CI is.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from ipaddress import IPv4Address, ip_network
from pathlib import Path

import pytest

from goalkeeper.exceptions import port_list
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.state import StateStore
from goalkeeper.views import record_as_dict
from goalkeeper_sim.demo import SimTick, sim_tick
from goalkeeper_sim.smtp import SmtpSink
from goalkeeper_sim.world import ALLOW_KEY, DNS_REASON, Server, World, build_world

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="53/udp needs a raw-socket UDP scan and a listener below 1024: root"
)

SEED = 7
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
UNTIL = date(2027, 3, 31)  # next year, within notify.max_exception_days of NOW
PORTS = [
    {"port": 53, "protocol": "udp", "service": "dns"},
    {"port": 6379, "protocol": "tcp", "service": "redis"},
    {"port": 27017, "protocol": "tcp", "service": "mongodb"},
]
ACCEPTED = "Accepted, so not reported as exposed:"


def the_world() -> World:
    catalog = {p.service: p for p in load_catalog().ports}
    return build_world(
        SEED,
        projects=3,
        servers_per_project=2,
        unknown_project_share=0,
        open_share=1,
        unassociated_floating_ips=0,
        services=[catalog["redis"], catalog["mongodb"]],
        exceptions_until=UNTIL,
    )


def server_with(world: World, wanted: str) -> tuple[IPv4Address, Server, str]:
    """The public address, server and owner's e-mail of the server whose allow value holds
    `wanted`."""
    for address, server in world.public_addresses().items():
        if wanted in dict(server.metadata).get(ALLOW_KEY, ""):
            client = world.client_of(server.project_id)
            assert client is not None
            return address, server, client.email
    raise AssertionError(f"no server's {ALLOW_KEY} holds {wanted!r}")


def text_to(smtp: SmtpSink, recipient: str) -> str:
    messages = [m for m in smtp.messages if m.rcpt_tos == (recipient,)]
    assert len(messages) == 1, f"{len(messages)} mails to {recipient}"
    body = messages[0].message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content()).replace("\r\n", "\n")


def exposed_part(text: str) -> str:
    """The part of a mail that lists ports as exposed (before "Closed" and "Accepted")."""
    return text.split("What is exposed and how to close it")[0]


async def tick(world: World, directory: Path, now: datetime, **overrides: object) -> SimTick:
    return await sim_tick(
        world,
        directory,
        privileged=True,
        now=now,
        overrides={"scan": {"ports": PORTS}, **overrides},
    )


async def test_accepted_dns_is_not_reminded_redis_is_and_after_until_the_end_is_mailed(
    tmp_path: Path,
) -> None:
    world = the_world()
    address, server, email = server_with(world, "53/udp")
    dns, redis = f"  {address}  53/udp  ", f"  {address}  6379/tcp  "

    first = await tick(world, tmp_path, NOW)
    text = text_to(first.smtp, email)
    assert redis in exposed_part(text) and dns not in exposed_part(text)
    accepted = text[text.index(ACCEPTED) :]
    assert f"accepted by you until {UNTIL.isoformat()} ({DNS_REASON})" in accepted
    assert dns in accepted
    (summary,) = first.telegram.messages
    assert "accepted: 1" in summary.plain
    # The mail shows the command that accepts its other ports too, for this very server id,
    # keeping what it accepts already, quoted as one shell word.
    ports = port_list((s.port, str(s.protocol)) for s in server.services)
    assert (
        f"openstack server set --property 'goalkeeper.allow={ports};until=2027-05-31;"
        f"reason={DNS_REASON}' {server.id}"
    ) in text

    reminder = await tick(world, tmp_path, NOW + timedelta(days=1))
    text = text_to(reminder.smtp, email)
    assert redis in exposed_part(text) and dns not in exposed_part(text)
    assert dns in text[text.index(ACCEPTED) :]

    state = await StateStore.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        rows = {
            (r["address"], r["port"]): r for r in map(record_as_dict, await state.list_findings())
        }
    finally:
        await state.aclose()
    row = rows[(str(address), 53)]
    assert row["status"] == "acknowledged"
    assert row["exception"]["source"] == "customer"
    assert row["exception"]["reason"] == DNS_REASON
    assert row["exception"]["until"] == UNTIL.isoformat()

    ended = await tick(world, tmp_path, datetime(2027, 4, 1, 6, 0, tzinfo=UTC))
    text = text_to(ended.smtp, email)
    assert dns in exposed_part(text)
    block = exposed_part(text)[exposed_part(text).index(dns) :]
    assert f"your exception ended on {UNTIL.isoformat()} ({DNS_REASON})" in block
    assert ACCEPTED not in text


async def test_an_unreadable_value_is_reported_to_its_customer(tmp_path: Path) -> None:
    world = the_world()
    address, server, email = server_with(world, "2027-13-01")
    report = await tick(world, tmp_path, NOW)
    text = " ".join(text_to(report.smtp, email).split())
    assert (
        f"We could not read the goalkeeper.allow setting on server {server.name}: "
        "the date 2027-13-01 is not a date."
    ) in text
    assert f"{address} " in text  # its ports are reported as usual


async def test_a_provider_exception_silences_the_findings_of_its_network(tmp_path: Path) -> None:
    world = the_world()
    address, _, email = server_with(world, "2027-13-01")
    network = ip_network(f"{address}/32")
    exceptions = [
        {"network": str(network), "ports": ["6379/tcp", "27017/tcp"], "until": "2027-01-31",
         "reason": "the provider's own cache"},
    ]  # fmt: skip
    result = await tick(world, tmp_path, NOW, exceptions=exceptions)
    report = result.report
    silenced = [f for f in report.acknowledged if f.address == address]
    assert silenced, "the server's open ports are acknowledged"
    assert all(f.acknowledged and f.acknowledged.source == "provider" for f in silenced)
    assert not [f for f in report.findings if f.address == address and f not in silenced]
    # Nothing else of that customer's is open, so it is not mailed; if it were, only as accepted.
    mails = [m for m in result.smtp.messages if m.rcpt_tos == (email,)]
    for mail in mails:
        body = mail.message.get_body(("plain",))
        assert isinstance(body, EmailMessage)
        assert f"  {address}  " not in exposed_part(str(body.get_content()))
