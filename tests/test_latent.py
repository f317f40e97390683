"""Latent exposure (DESIGN §8): a rule opens a catalog port on which the tick found nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address

from goalkeeper.firewall import PortFirewall, SecurityGroup, SecurityGroupRule
from goalkeeper.lifecycle import Coverage
from goalkeeper.model import Finding, PortSpec, Target, Transport
from goalkeeper.rootcause import LatentExposure, MatchedRule, latent_exposures

NOW = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
GROUP = "0b8b0f5c-5d8e-4a6b-9c3e-0e1d2f3a4b5c"
RULE = "5f0d7e3c-2b1a-4c9d-8e7f-6a5b4c3d2e1f"
MONGO = PortSpec(27017, Transport.TCP, "mongodb")
REDIS = PortSpec(6379, Transport.TCP, "redis")
CATALOG = [REDIS, MONGO]
OPEN_RANGE = SecurityGroup(
    id=GROUP,
    name="db",
    rules=(
        SecurityGroupRule(
            id=RULE,
            security_group_id=GROUP,
            direction="ingress",
            ethertype="IPv4",
            protocol="tcp",
            port_range_min=6000,
            port_range_max=28000,
            remote_ip_prefix="0.0.0.0/0",
        ),
    ),
)


def target(address: str, *, enabled: bool = True) -> Target:
    firewall = PortFirewall(
        port_id="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        port_security_enabled=enabled,
        groups=(OPEN_RANGE,),
    )
    return Target(address=ip_address(address), server_id="s", firewall=firewall)


def finding(t: Target, spec: PortSpec) -> Finding:
    return Finding(t.address, spec.port, spec.protocol, spec.service, t, NOW, NOW)


def coverage(*addresses: str, ports: list[PortSpec] = CATALOG) -> Coverage:
    return Coverage(
        scanned=frozenset(ip_address(a) for a in addresses),
        ports=frozenset((p.port, p.protocol) for p in ports),
    )


def test_an_opened_port_with_nothing_listening_is_latent() -> None:
    web = target("198.51.200.10")
    latent = latent_exposures(
        [web], [finding(web, REDIS)], CATALOG, egress=(), coverage=coverage("198.51.200.10")
    )
    assert latent == (
        LatentExposure(
            web.address,
            27017,
            Transport.TCP,
            web,
            (MatchedRule(GROUP, "db", RULE, "tcp", 6000, 28000, "0.0.0.0/0"),),
            "mongodb",
        ),
    )


def test_not_latent_where_the_port_was_not_scanned() -> None:
    web, gone = target("198.51.200.10"), target("198.51.200.11")
    latent = latent_exposures(
        [web, gone], [], CATALOG, egress=(), coverage=coverage("198.51.200.10", ports=[REDIS])
    )
    assert [(x.address, x.port) for x in latent] == [(web.address, 6379)]


def test_not_latent_without_a_firewall_or_without_port_security() -> None:
    static = Target(address=ip_address("198.51.200.12"))
    off = target("198.51.200.13", enabled=False)
    scanned = coverage("198.51.200.12", "198.51.200.13")
    assert latent_exposures([static, off], [], CATALOG, egress=(), coverage=scanned) == ()


def test_a_rule_that_misses_the_egress_address_is_not_latent() -> None:
    narrow = SecurityGroupRule(
        id=RULE,
        security_group_id=GROUP,
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=27017,
        port_range_max=27017,
        remote_ip_prefix="8.8.8.0/24",
    )
    firewall = PortFirewall(
        port_id="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        port_security_enabled=True,
        groups=(SecurityGroup(id=GROUP, name="db", rules=(narrow,)),),
    )
    web = Target(address=ip_address("198.51.200.10"), firewall=firewall)
    scanned = coverage("198.51.200.10")
    # No egress address of the family configured: 8.8.8.0/24 is public space, so it counts.
    no_egress = latent_exposures([web], [], CATALOG, egress=[ip_address("::1")], coverage=scanned)
    assert [x.port for x in no_egress] == [27017]
    ours = latent_exposures([web], [], CATALOG, egress=[ip_address("192.0.2.7")], coverage=scanned)
    assert ours == ()
