"""IPv6 targets scanned for real: nmap -6, SYN and connect, inside a namespace of the test's own.

The namespace's `lo` gets addresses from fd00::/8 (unique local, routed nowhere), listeners run
on them there, and the real NmapScanner scans them; nothing leaves the namespace. The scanner
must put IPv4 and IPv6 in runs of their own (nmap takes one family per run, `-6`) and group
IPv6 by scan.subnet_prefix_v6.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.netns import (
    NamespaceScan,
    NamespaceScenario,
    namespace_unavailable,
    network_namespace,
    scan_in_namespace,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(namespace_unavailable() is not None, reason=str(namespace_unavailable())),
]
FAST = "-Pn -n -T4 --max-retries 2 --host-timeout 60s"
# Two /64s of fd00:6::/48 and one IPv4 loopback address, all inside the namespace.
LO = ["fd00:6:0:1::1/64", "fd00:6:0:1::2/64", "fd00:6:0:1::3/64", "fd00:6:0:2::1/64"]
V6 = ["fd00:6:0:1::1", "fd00:6:0:1::2", "fd00:6:0:1::3", "fd00:6:0:2::1"]
LISTENERS = [
    ("fd00:6:0:1::1", 6379, "tcp"),
    ("fd00:6:0:1::2", 3306, "tcp"),
    ("fd00:6:0:2::1", 6379, "tcp"),
    ("fd00:6:0:1::1", 11211, "udp"),
    ("127.42.210.1", 6379, "tcp"),
]
PORTS = [(6379, "tcp", "redis"), (3306, "tcp", "mysql"), (11211, "udp", "memcached")]
OPEN_TCP = [
    ["127.42.210.1", 6379, "tcp"],
    ["fd00:6:0:1::1", 6379, "tcp"],
    ["fd00:6:0:1::2", 3306, "tcp"],
    ["fd00:6:0:2::1", 6379, "tcp"],
]


def opened(result: dict[str, Any]) -> list[list[object]]:
    return sorted(port[:3] for port in result["open_ports"])


async def test_ipv6_targets_are_scanned_with_nmap_6_syn_and_connect() -> None:
    both = ["127.42.210.1", *V6]
    scenario = NamespaceScenario(
        lo_addresses=LO,
        listeners=LISTENERS,
        scans=[
            NamespaceScan(addresses=both, ports=PORTS, scan={"nmap_arguments": FAST}),
            NamespaceScan(
                addresses=both,
                ports=PORTS,
                scan={"privileged": False, "nmap_arguments": FAST},
            ),
        ],
    )
    with network_namespace() as namespace:
        syn, connect = await scan_in_namespace(namespace, scenario)

    assert syn["scanned"] == connect["scanned"] == sorted(both)
    assert opened(syn) == sorted([*OPEN_TCP, ["fd00:6:0:1::1", 11211, "udp"]])
    assert opened(connect) == OPEN_TCP  # a connect scan probes no UDP
    # One IPv4 run and one IPv6 run (both /64s fit one batch): families never share a run.
    assert syn["nmap_runs"] == connect["nmap_runs"] == 2
    assert syn["not_scanned"] == connect["not_scanned"] == {}


async def test_ipv6_batches_follow_subnet_prefix_v6_with_a_source_address_each() -> None:
    # batch_size 1 puts every address in a run of its own; two raw runs at once, each from one
    # of the namespace's IPv6 source addresses, must not see each other's replies.
    sources = ["fd00:6:0:1::a", "fd00:6:0:1::b"]
    scan = {
        "nmap_arguments": FAST,
        "batch_size": 1,
        "max_concurrent_scans": 2,
        "max_concurrent_per_subnet": 2,
        "source_addresses": sources,
    }
    scenario = NamespaceScenario(
        lo_addresses=[*LO, *(f"{s}/64" for s in sources)],
        listeners=LISTENERS,
        scans=[NamespaceScan(addresses=V6, ports=PORTS[:2], scan=scan)],
    )
    with network_namespace() as namespace:
        (result,) = await scan_in_namespace(namespace, scenario)

    assert result["scanned"] == V6
    assert opened(result) == OPEN_TCP[1:]
    assert result["nmap_runs"] == len(V6)
    assert result["failed_batches"] == 0
