"""Root cause end to end (issue 15): a real tick, through openstacksdk, against the simulated
cloud. The owner of a server whose security group opens Redis's 6379/tcp to 0.0.0.0/0 gets a
mail with that very rule's id in a `security group rule delete` command, and the owner of a
server whose port has port security off is told it has no firewall at all. Rules and ports are
read from the simulator's world, never written down here.
"""

from __future__ import annotations

from email.message import EmailMessage
from ipaddress import IPv4Address
from pathlib import Path

from goalkeeper.scanning.catalog import load_catalog
from goalkeeper_sim.demo import sim_tick
from goalkeeper_sim.world import Server, World, build_world

SEED = 4  # gives a world rule for 6379/tcp and servers with port security off (world_firewalls)
REDIS = 6379


def the_world() -> World:
    return build_world(
        SEED,
        projects=8,
        servers_per_project=3,
        unknown_project_share=0,
        open_share=0.8,
        unassociated_floating_ips=0,
        # Unprivileged nmap connects: ports from 1024 up, as in test_bad_owner_tick.
        services=[p for p in load_catalog().ports if p.protocol == "tcp" and p.port >= 1024],
    )


def world_rules(world: World, port: int) -> dict[IPv4Address, tuple[Server, str]]:
    """Public addresses of owned servers that listen on `port`/tcp, with the id of the rule of
    their groups that opens exactly that port to 0.0.0.0/0."""
    ports = {p.id: p for p in world.ports}
    groups = {g.id: g for g in world.security_groups}
    found = {}
    for address, server in world.public_addresses().items():
        if world.client_of(server.project_id) is None:
            continue
        if not any(s.port == port for s in server.services):
            continue
        for port_id in server.port_ids:
            if not ports[port_id].port_security_enabled:
                continue
            for group_id in ports[port_id].security_group_ids:
                for rule in groups[group_id].rules:
                    if (
                        rule.direction == "ingress"
                        and rule.protocol == "tcp"
                        and rule.port_min == rule.port_max == port
                        and rule.remote_ip_prefix == "0.0.0.0/0"
                    ):
                        found[address] = (server, rule.id)
    return found


def unfiltered(world: World) -> dict[IPv4Address, Server]:
    """Public addresses of owned servers with open services and port security off."""
    ports = {p.id: p for p in world.ports}
    return {
        address: server
        for address, server in world.public_addresses().items()
        if server.services
        and world.client_of(server.project_id) is not None
        and not any(ports[p].port_security_enabled for p in server.port_ids)
    }


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content()).replace("\r\n", "\n")


async def test_owners_get_the_rule_that_exposes_them_and_the_command_that_closes_it(
    tmp_path: Path,
) -> None:
    world = the_world()
    ruled, open_ports = world_rules(world, REDIS), unfiltered(world)
    assert ruled and open_ports, "the seed must give both causes"
    tick = await sim_tick(world, tmp_path)
    report, smtp, telegram = tick.report, tick.smtp, tick.telegram

    assert all(mail.delivered for mail in report.mails), report.mails
    mails: dict[str, list[str]] = {}
    for mail in smtp.messages:
        mails.setdefault(mail.rcpt_tos[0], []).append(text_of(mail.message))
    for address, (server, rule_id) in ruled.items():
        client = world.client_of(server.project_id)
        assert client is not None
        (text,) = [t for t in mails[client.email] if f"{address}  {REDIS}/tcp" in t]
        assert f"rule {rule_id} allows 0.0.0.0/0 to {REDIS}/tcp" in text
        assert f"\n        openstack security group rule delete {rule_id}\n" in text
    for address, server in open_ports.items():
        client = world.client_of(server.project_id)
        assert client is not None
        (text,) = [t for t in mails[client.email] if f"{address}  " in t]
        block = text[text.index(f"  {address}  ") :]
        assert "Port security is turned off" in block.split("\n\n")[0]
        assert "openstack port set --enable-port-security" in block
    causes = {f.key: f.cause for f in report.findings}
    assert all(c is not None for c in causes.values())
    (summary,) = telegram.messages
    assert "Causes: world_rule:" in summary.plain
