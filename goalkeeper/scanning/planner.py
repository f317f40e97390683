"""The scan plan: which addresses go into which nmap run, and how fast and how many at once.

Batches are packed from whole subnets up to `batch_size` hosts (nmap pays a fixed price per
host group: docs/performance.md), and the pace divides the operator's packet-rate ceilings
among the runs that may go at once, so that neither all runs together nor all runs touching one
subnet can exceed them. Pure arithmetic: it must not run nmap, read files, log or do any other
I/O, so it is tested by tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network
from typing import TypeAlias

from goalkeeper.model import IPAddress

Subnet: TypeAlias = IPv4Network | IPv6Network

# An IPv6 subnet is a /64 unless scan.subnet_prefix_v6 says otherwise, never scan.subnet_prefix:
# /64 is the size of one IPv6 link (one router, one neighbour cache), which is what the
# per-subnet cap exists to protect; stretching the IPv4 prefix (/24 + 96 = /120) would cut one
# link into thousands of "subnets".
IPV6_SUBNET_PREFIX = 64

# Spreading a small scan over every run stops here: below a few hundred hosts nmap's fixed cost
# per run outweighs what a second run in parallel saves.
SPREAD_BATCH_FLOOR = 256

# The most packets per second --min-rate may force on one nmap run. Above it a run must earn its
# speed from replies (nmap's own timing), because a forced rate that a busy core cannot follow
# overruns nmap's packet capture and loses open ports (measured: docs/performance.md).
FORCED_RATE_LIMIT = 10_000

# nmap's --max-rate is an average: in any one second it let through up to 2.1 % more (measured
# against 5,000/s and 10,000/s: docs/performance.md). Runs are given 97 % of their share so that
# the operator's ceilings hold in every second, not only on average.
RATE_HEADROOM_PERCENT = 97


@dataclass(frozen=True, slots=True)
class Batch:
    """The addresses of one nmap run: whole subnets of one address family, sorted, at most
    `batch_size` of them (a subnet larger than that is split over consecutive batches)."""

    subnets: tuple[Subnet, ...]
    addresses: tuple[IPAddress, ...]
    index: int  # position in the plan, for logs

    @property
    def version(self) -> int:
        return self.subnets[0].version


@dataclass(frozen=True, slots=True)
class ScanPlan:
    batches: tuple[Batch, ...]

    @property
    def addresses(self) -> tuple[IPAddress, ...]:
        return tuple(address for batch in self.batches for address in batch.addresses)

    @property
    def subnets(self) -> tuple[Subnet, ...]:
        return tuple(dict.fromkeys(subnet for batch in self.batches for subnet in batch.subnets))


@dataclass(frozen=True, slots=True)
class Pace:
    """How many nmap runs go at once, and the packet rates each is held to.

    `run_rate` is a run's share of `max_rate`; `subnet_rate` is its share of
    `max_rate_per_subnet` (the ceiling of one subnet divided among the runs that may probe it at
    once). What a run may send depends on its batch: see `rates`."""

    runs: int
    per_subnet: int  # runs at once that may probe one subnet
    run_rate: int
    subnet_rate: int

    @property
    def max_rate(self) -> int:
        """The rate of a run whose batch is one subnet: the worst case, for logs and checks."""
        return min(self.run_rate, self.subnet_rate)

    def rates(self, batch: Batch) -> tuple[int, int]:
        """nmap's `--max-rate` and `--min-rate` for `batch`.

        nmap sends a host group's probes round robin over its hosts (`--randomize-hosts` mixes
        their order, so the last hosts to finish are not one subnet), so a subnet gets the share
        of a run's probes that its hosts are of the batch. A run over k equal subnets may then
        go at k times `subnet_rate` with each subnet held to `subnet_rate` on average; with unequal
        subnets the largest decides. Never above `run_rate`, the run's share of `max_rate`, and
        less RATE_HEADROOM_PERCENT.
        """
        largest = max(_subnet_counts(batch).values())
        share = min(self.run_rate, self.subnet_rate * len(batch.addresses) // largest)
        rate = max(1, share * RATE_HEADROOM_PERCENT // 100)
        return rate, min(rate, FORCED_RATE_LIMIT)


def subnet_of(
    address: IPAddress, *, subnet_prefix: int, subnet_prefix_v6: int = IPV6_SUBNET_PREFIX
) -> Subnet:
    """The subnet `address` counts against: IPv4 /subnet_prefix, IPv6 /subnet_prefix_v6."""
    prefix = subnet_prefix if isinstance(address, IPv4Address) else subnet_prefix_v6
    return ip_network(f"{address}/{prefix}", strict=False)


def plan_scan(
    addresses: Sequence[IPAddress],
    *,
    subnet_prefix: int,
    batch_size: int,
    runs: int = 1,
    subnet_prefix_v6: int = IPV6_SUBNET_PREFIX,
) -> ScanPlan:
    """Pack `addresses` (duplicates removed) into batches of whole subnets, at most `batch_size`.

    Subnets are taken in order and a batch is closed when the next whole subnet would not fit,
    so two batches share a subnet only when that subnet alone exceeds `batch_size`. With `runs`
    nmap runs going at once, a scan too small to fill them gets smaller batches (down to
    SPREAD_BATCH_FLOOR hosts), so that every run has a share. The order is deterministic
    whatever order the addresses come in: IPv4 before IPv6, subnets ascending, addresses
    ascending. IPv4 and IPv6 never share a batch: nmap runs one family per run (`-6`).
    """
    if not 0 <= subnet_prefix <= 32:
        raise ValueError(f"subnet_prefix must be 0..32, not {subnet_prefix}")
    if not 0 <= subnet_prefix_v6 <= 128:
        raise ValueError(f"subnet_prefix_v6 must be 0..128, not {subnet_prefix_v6}")
    if batch_size < 1 or runs < 1:
        raise ValueError(f"batch_size and runs must be at least 1, not {batch_size}, {runs}")
    by_subnet = _by_subnet(
        addresses, subnet_prefix=subnet_prefix, subnet_prefix_v6=subnet_prefix_v6
    )
    total = sum(len(members) for members in by_subnet.values())
    batch_size = min(batch_size, max(SPREAD_BATCH_FLOOR, -(-total // runs)))
    batches: list[Batch] = []
    subnets: list[Subnet] = []
    members: list[IPAddress] = []

    def close() -> None:
        if members:
            batches.append(Batch(tuple(subnets), tuple(members), index=len(batches)))
            subnets.clear()
            members.clear()

    for subnet in sorted(by_subnet, key=_subnet_order):
        hosts = sorted(by_subnet[subnet], key=int)  # one subnet holds one address family
        if members and (
            len(members) + len(hosts) > batch_size or subnets[0].version != subnet.version
        ):
            close()
        for start in range(0, len(hosts), batch_size):
            if start:
                close()
            subnets.append(subnet)
            members.extend(hosts[start : start + batch_size])
    close()
    return ScanPlan(batches=tuple(batches))


def _by_subnet(
    addresses: Sequence[IPAddress], *, subnet_prefix: int, subnet_prefix_v6: int
) -> dict[Subnet, set[IPAddress]]:
    by_subnet: dict[Subnet, set[IPAddress]] = {}
    # One subnet object per subnet, not per address: ip_network() is slow (docs/performance.md).
    subnets_by_key: dict[tuple[int, int], Subnet] = {}
    for address in addresses:
        prefix = subnet_prefix if isinstance(address, IPv4Address) else subnet_prefix_v6
        key = (address.version, int(address) >> (address.max_prefixlen - prefix))
        subnet = subnets_by_key.get(key)
        if subnet is None:
            subnet = subnets_by_key[key] = subnet_of(
                address, subnet_prefix=subnet_prefix, subnet_prefix_v6=subnet_prefix_v6
            )
        by_subnet.setdefault(subnet, set()).add(address)
    return by_subnet


def plan_pace(
    *,
    max_rate: int,
    max_rate_per_subnet: int,
    max_concurrent_scans: int,
    max_concurrent_per_subnet: int,
    capture_slots: int | None,
) -> Pace:
    """Runs at once and each run's share of the two ceilings.

    `capture_slots` is how many runs may capture replies side by side without seeing each
    other's (one per source address for raw-socket scans), or None when runs capture nothing
    (connect scans). Each run gets an equal share of `max_rate`; and since up to
    `max_concurrent_per_subnet` runs may probe one subnet at once, each gets that share of
    `max_rate_per_subnet` for any one subnet (`Pace.rates` turns it into a run's rate).
    """
    if min(max_rate, max_rate_per_subnet, max_concurrent_scans, max_concurrent_per_subnet) < 1:
        raise ValueError("rates and concurrency must be at least 1")
    runs = min(max_concurrent_scans, max_rate)  # every run sends at least 1 packet/s
    if capture_slots is not None:
        runs = max(1, min(runs, capture_slots))
    per_subnet = min(max_concurrent_per_subnet, max_rate_per_subnet, runs)
    return Pace(
        runs=runs,
        per_subnet=per_subnet,
        run_rate=max_rate // runs,
        subnet_rate=max_rate_per_subnet // per_subnet,
    )


def _subnet_counts(batch: Batch) -> dict[int, int]:
    """How many of the batch's addresses each of its subnets holds (by subnet position)."""
    counts = dict.fromkeys(range(len(batch.subnets)), 0)
    position = 0
    for address in batch.addresses:  # addresses come subnet by subnet, in the subnets' order
        while address not in batch.subnets[position]:
            position += 1
        counts[position] += 1
    return counts


def _subnet_order(subnet: Subnet) -> tuple[int, int]:
    return (subnet.version, int(subnet.network_address))
