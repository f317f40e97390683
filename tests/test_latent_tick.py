"""Latent exposures end to end (issue 15, DESIGN §8): real ticks, through openstacksdk, against
the simulated cloud, whose world gives one server a `legacy-mongodb` group opening 27017/tcp to
0.0.0.0/0 with nothing listening there (goalkeeper_sim.world_firewalls). It is an advisory: never
a finding, listed with the rule's delete command, mailed alone at most every latent_days.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from ipaddress import IPv4Address
from pathlib import Path

from goalkeeper.scanning.catalog import load_catalog
from goalkeeper_sim.demo import sim_tick
from goalkeeper_sim.world import Client, World, build_world
from goalkeeper_sim.world_firewalls import LATENT_PORT

SEED = 4
T0 = datetime(2027, 3, 1, 6, 0, tzinfo=UTC)
HEADING = "Open in your firewall, nothing listening yet"
# Reminders a year apart: a report on the second and third ticks would carry the advisory
# anyway, and this test is about the advisory mailed alone.
QUIET = {"notify": {"reminder_days": 365, "latent_days": 30}}


def the_world() -> World:
    return build_world(
        SEED,
        projects=8,
        servers_per_project=3,
        unknown_project_share=0,
        open_share=0.8,
        unassociated_floating_ips=0,
        services=[p for p in load_catalog().ports if p.protocol == "tcp" and p.port >= 1024],
    )


def the_latent(world: World) -> tuple[IPv4Address, Client, str]:
    """The public address behind the legacy-mongodb group, its owner, and the rule's id."""
    (group,) = [g for g in world.security_groups if g.name == "legacy-mongodb"]
    (rule,) = group.rules
    ports = {p.id: p for p in world.ports}
    for address, server in world.public_addresses().items():
        if any(group.id in ports[p].security_group_ids for p in server.port_ids):
            client = world.client_of(server.project_id)
            assert client is not None, "the seed must give the latent group an owned server"
            return address, client, rule.id
    raise AssertionError("no public address carries the legacy-mongodb group")


def texts_to(tick_smtp_messages: list[EmailMessage], email: str) -> list[tuple[str, str]]:
    found = []
    for message in tick_smtp_messages:
        if message["To"] != email:
            continue
        body = message.get_body(("plain",))
        assert isinstance(body, EmailMessage)
        found.append((str(message["Subject"]), str(body.get_content()).replace("\r\n", "\n")))
    return found


async def test_a_rule_open_where_nothing_listens_is_an_advisory_mailed_at_most_every_latent_days(
    tmp_path: Path,
) -> None:
    world = the_world()
    address, client, rule_id = the_latent(world)
    delete = f"openstack security group rule delete {rule_id}"

    first = await sim_tick(world, tmp_path, now=T0, overrides=QUIET)
    assert first.report.latent_exposures >= 1
    assert not [f for f in first.report.findings if f.port == LATENT_PORT and f.address == address]
    told = [
        text
        for _, text in texts_to([m.message for m in first.smtp.messages], client.email)
        if HEADING in text
    ]
    assert len(told) == 1, "the owner hears of it once, in a report or alone"
    section = told[0][told[0].index(HEADING) :]
    (line,) = [x for x in section.splitlines() if x.startswith(f"  {address}  (server ")]
    assert f"{LATENT_PORT}/tcp mongodb" in line
    assert f"rule {rule_id}: allows {LATENT_PORT}/tcp from 0.0.0.0/0" in section
    assert delete in section
    (summary,) = first.telegram.messages
    assert f"Latent exposures: {first.report.latent_exposures}" in summary.plain

    # The store lists it for `findings --json --latent`, read-only like `findings`.
    # The written config leaves its secrets out; `findings` reads the store, never Fleio or
    # Telegram, so they are switched off rather than given tokens.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALKEEPER_")} | {
        "GOALKEEPER_INVENTORY__FLEIO__ENABLED": "false",
        "GOALKEEPER_NOTIFY__TELEGRAM__ENABLED": "false",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "goalkeeper", "--config", str(tmp_path / "config.yaml"),
        "findings", "--json", "--latent",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    rows = json.loads(out)
    (row,) = [r for r in rows if r["address"] == str(address) and r["port"] == LATENT_PORT]
    assert row["protocol"] == "tcp"
    assert row["recipient_key"] == client.email
    assert [r["rule_id"] for r in row["rules"]] == [rule_id]

    # A day later nothing new: no report for the owner, and the advisory is not due again.
    second = await sim_tick(world, tmp_path, now=T0 + timedelta(days=1), overrides=QUIET)
    assert second.report.latent_exposures == first.report.latent_exposures
    assert not texts_to([m.message for m in second.smtp.messages], client.email)

    # Past latent_days: the advisory alone, with its own subject, and no finding in it.
    third = await sim_tick(world, tmp_path, now=T0 + timedelta(days=31), overrides=QUIET)
    alone = texts_to([m.message for m in third.smtp.messages], client.email)
    assert len(alone) == 1, alone
    subject, text = alone[0]
    assert "where nothing listens yet" in subject
    assert delete in text
    assert "at most every 30 days" in text
    assert "Redis database open to the Internet" not in text
