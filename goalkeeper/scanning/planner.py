"""The scan plan: which addresses go into which nmap run, grouped by subnet.

Grouping by subnet lets the scanner cap how many nmap runs hit one customer network (and the
router in front of it) at once; batching caps how much one nmap process holds in memory and how
much one failed run loses. This module is pure arithmetic on addresses: it must not run nmap,
read settings files, log or do any other I/O, so it is tested by tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network
from typing import TypeAlias

from goalkeeper.model import IPAddress

Subnet: TypeAlias = IPv4Network | IPv6Network

# An IPv6 subnet is a /64 whatever scan.subnet_prefix says: /64 is the size of one IPv6 link (one
# router, one neighbour cache), which is what the per-subnet cap exists to protect; stretching the
# IPv4 prefix (/24 + 96 = /120) would cut one link into thousands of "subnets".
IPV6_SUBNET_PREFIX = 64


@dataclass(frozen=True, slots=True)
class Batch:
    """The addresses of one nmap run: all in `subnet`, sorted, at most `batch_size` of them."""

    subnet: Subnet
    addresses: tuple[IPAddress, ...]
    index: int  # position in the plan, for logs


@dataclass(frozen=True, slots=True)
class ScanPlan:
    batches: tuple[Batch, ...]

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        return tuple(address for batch in self.batches for address in batch.addresses)

    @property
    def subnets(self) -> tuple[Subnet, ...]:
        return tuple(dict.fromkeys(batch.subnet for batch in self.batches))


def subnet_of(address: IPAddress, *, subnet_prefix: int) -> Subnet:
    """The subnet `address` counts against: IPv4 /subnet_prefix, IPv6 always /64."""
    prefix = subnet_prefix if isinstance(address, IPv4Address) else IPV6_SUBNET_PREFIX
    return ip_network(f"{address}/{prefix}", strict=False)


def plan_scan(addresses: Sequence[IPAddress], *, subnet_prefix: int, batch_size: int) -> ScanPlan:
    """Group `addresses` by subnet into batches of at most `batch_size`, duplicates removed.

    The order is deterministic whatever order the addresses come in: IPv4 subnets before IPv6,
    subnets ascending, addresses ascending inside each batch.
    """
    if not 0 <= subnet_prefix <= 32:
        raise ValueError(f"subnet_prefix must be 0..32, not {subnet_prefix}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    by_subnet: dict[Subnet, set[IPAddress]] = {}
    for address in addresses:
        by_subnet.setdefault(subnet_of(address, subnet_prefix=subnet_prefix), set()).add(address)
    batches: list[Batch] = []
    for subnet in sorted(by_subnet, key=_subnet_order):
        members = sorted(by_subnet[subnet])  # one subnet holds one address family: comparable
        for start in range(0, len(members), batch_size):
            chunk = tuple(members[start : start + batch_size])
            batches.append(Batch(subnet=subnet, addresses=chunk, index=len(batches)))
    return ScanPlan(batches=tuple(batches))


def _subnet_order(subnet: Subnet) -> tuple[int, int]:
    return (subnet.version, int(subnet.network_address))
