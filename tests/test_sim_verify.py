"""The simulator's listeners speak enough Redis and Elasticsearch for real nmap to grade them
(the demo shows every grade): Redis answering INFO, Redis wanting a password, Elasticsearch's
`GET /`, and a port that accepts and closes."""

from __future__ import annotations

import asyncio
import shutil
from ipaddress import IPv4Address

import pytest

from goalkeeper.config import ScanSettings
from goalkeeper.model import Grade, PortSpec, Transport
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.scanning.nmap import NmapScanner
from goalkeeper.scanning.verify import VerifyingScanner
from goalkeeper_sim.listeners import PortListeners, locked

TCP = Transport.TCP
OPEN, LOCKED = IPv4Address("127.77.1.1"), IPv4Address("127.77.1.2")
PORTS = [PortSpec(6379, TCP, "redis"), PortSpec(9200, TCP, "elasticsearch"),
         PortSpec(27017, TCP, "mongodb"), PortSpec(11211, TCP, "memcached")]  # fmt: skip


@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
def test_the_simulated_services_get_every_grade() -> None:
    assert not locked(OPEN) and locked(LOCKED)
    settings = ScanSettings.model_validate(
        {"nmap_arguments": "-Pn -n -T4", "allow_loopback": True, "privileged": False}
    )
    endpoints = [(OPEN, 6379, TCP), (LOCKED, 6379, TCP), (OPEN, 9200, TCP), (OPEN, 27017, TCP),
                 (LOCKED, 11211, TCP)]  # fmt: skip

    async def scan() -> dict[tuple[str, int], tuple[Grade | None, str]]:
        async with PortListeners(endpoints):
            scanner = VerifyingScanner(NmapScanner(settings), settings, load_catalog())
            async with scanner:
                result = await scanner.scan([OPEN, LOCKED], PORTS)
        return {(str(p.address), p.port): (p.grade, p.evidence) for p in result.open_ports}

    found = asyncio.run(scan())
    assert found == {
        ("127.77.1.1", 6379): (
            Grade.UNAUTHENTICATED, "Redis 7.0.15 answered `INFO` without a password"
        ),
        ("127.77.1.2", 6379): (
            Grade.REACHABLE, "Redis answered, but would not run `INFO` without a password"
        ),
        ("127.77.1.1", 9200): (
            Grade.UNAUTHENTICATED,
            "Elasticsearch 7.17.9 answered `GET /` with its cluster name without a password",
        ),
        ("127.77.1.2", 11211): (Grade.REACHABLE, "Memcached answered: authentication required"),
        ("127.77.1.1", 27017): (
            Grade.UNCONFIRMED, "port open; closed the connection, no MongoDB reply"
        ),
    }  # fmt: skip


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="a UDP scan needs raw sockets")
def test_the_simulated_resolver_answers_as_dns() -> None:
    settings = ScanSettings.model_validate(
        {"nmap_arguments": "-Pn -n -T4", "allow_loopback": True, "privileged": True}
    )
    udp = Transport.UDP

    async def scan() -> list[tuple[Grade | None, str]]:
        async with PortListeners([(OPEN, 53, udp)]):
            scanner = VerifyingScanner(NmapScanner(settings), settings, load_catalog())
            async with scanner:
                result = await scanner.scan([OPEN], [PortSpec(53, udp, "dns")])
        return [(p.grade, p.evidence) for p in result.open_ports]

    assert asyncio.run(scan()) == [(Grade.REACHABLE, "DNS answered")]
