"""The scan plan is pure arithmetic: tables of addresses in, batches out; ceilings in, pace out."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from goalkeeper.model import IPAddress
from goalkeeper.scanning.planner import (
    FORCED_RATE_LIMIT,
    Batch,
    Pace,
    plan_pace,
    plan_scan,
    subnet_of,
)


def addresses(*texts: str) -> list[IPAddress]:
    return [ip_address(text) for text in texts]


# (addresses in, subnet_prefix, batch_size, expected batches as (subnets, addresses))
PLANS = [
    pytest.param([], 24, 4, [], id="nothing to scan"),
    pytest.param(
        ["198.51.100.7", "198.51.100.3", "198.51.100.5"],
        24,
        256,
        [(["198.51.100.0/24"], ["198.51.100.3", "198.51.100.5", "198.51.100.7"])],
        id="one subnet, sorted",
    ),
    pytest.param(
        ["198.51.100.9", "198.51.100.9", "198.51.100.1"],
        24,
        256,
        [(["198.51.100.0/24"], ["198.51.100.1", "198.51.100.9"])],
        id="duplicates removed",
    ),
    pytest.param(
        ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5"],
        24,
        2,
        [
            (["198.51.100.0/24"], ["198.51.100.1", "198.51.100.2"]),
            (["198.51.100.0/24"], ["198.51.100.3", "198.51.100.4"]),
            (["198.51.100.0/24"], ["198.51.100.5"]),
        ],
        id="a subnet larger than batch_size is split",
    ),
    pytest.param(
        ["203.0.113.5", "198.51.100.200", "203.0.113.1", "198.51.100.2"],
        24,
        256,
        [
            (
                ["198.51.100.0/24", "203.0.113.0/24"],
                ["198.51.100.2", "198.51.100.200", "203.0.113.1", "203.0.113.5"],
            ),
        ],
        id="whole subnets packed into one batch, subnets ascending",
    ),
    pytest.param(
        ["203.0.113.5", "198.51.100.200", "203.0.113.1", "198.51.100.2", "192.0.2.1"],
        24,
        3,
        [
            (["192.0.2.0/24", "198.51.100.0/24"], ["192.0.2.1", "198.51.100.2", "198.51.100.200"]),
            (["203.0.113.0/24"], ["203.0.113.1", "203.0.113.5"]),
        ],
        id="a subnet that does not fit whole starts the next batch",
    ),
    pytest.param(
        ["192.0.2.1", "198.51.100.1", "198.51.100.2", "198.51.100.3", "203.0.113.1"],
        24,
        2,
        [
            (["192.0.2.0/24"], ["192.0.2.1"]),
            (["198.51.100.0/24"], ["198.51.100.1", "198.51.100.2"]),
            (["198.51.100.0/24", "203.0.113.0/24"], ["198.51.100.3", "203.0.113.1"]),
        ],
        id="only a subnet larger than batch_size spans batches",
    ),
    pytest.param(
        ["198.51.100.1", "198.51.100.200"],
        25,
        256,
        [(["198.51.100.0/25", "198.51.100.128/25"], ["198.51.100.1", "198.51.100.200"])],
        id="subnet_prefix decides the subnet",
    ),
    pytest.param(
        ["198.51.100.1", "198.51.101.1", "198.51.102.1"],
        16,
        2,
        [
            (["198.51.0.0/16"], ["198.51.100.1", "198.51.101.1"]),
            (["198.51.0.0/16"], ["198.51.102.1"]),
        ],
        id="wide subnet",
    ),
    pytest.param(
        ["2001:db8:0:1::5", "198.51.100.1", "2001:db8:0:1:ffff::1", "2001:db8:0:2::1"],
        24,
        256,
        [
            (["198.51.100.0/24"], ["198.51.100.1"]),
            (
                ["2001:db8:0:1::/64", "2001:db8:0:2::/64"],
                ["2001:db8:0:1::5", "2001:db8:0:1:ffff::1", "2001:db8:0:2::1"],
            ),
        ],
        id="IPv6 grouped by /64, after IPv4, never in one batch with it",
    ),
]


def test_ipv6_is_grouped_by_subnet_prefix_v6() -> None:
    given = addresses("2001:db8:0:1::5", "2001:db8:0:2::1", "2001:db8:1::1")
    plan = plan_scan(given, subnet_prefix=24, batch_size=2, subnet_prefix_v6=48)
    got = [([str(s) for s in b.subnets], [str(a) for a in b.addresses]) for b in plan.batches]
    assert got == [
        (["2001:db8::/48"], ["2001:db8:0:1::5", "2001:db8:0:2::1"]),
        (["2001:db8:1::/48"], ["2001:db8:1::1"]),
    ]
    assert subnet_of(given[0], subnet_prefix=24, subnet_prefix_v6=56) == ip_network("2001:db8::/56")
    with pytest.raises(ValueError, match="subnet_prefix_v6"):
        plan_scan(given, subnet_prefix=24, batch_size=2, subnet_prefix_v6=129)


@pytest.mark.parametrize(("given", "prefix", "size", "expected"), PLANS)
def test_plan_scan(
    given: list[str], prefix: int, size: int, expected: list[tuple[list[str], list[str]]]
) -> None:
    plan = plan_scan(addresses(*given), subnet_prefix=prefix, batch_size=size)

    got = [([str(s) for s in b.subnets], [str(a) for a in b.addresses]) for b in plan.batches]
    assert got == expected
    assert [batch.index for batch in plan.batches] == list(range(len(expected)))


@pytest.mark.parametrize(
    ("hosts", "runs", "sizes"),
    [
        (1024, 1, [1024]),
        (1024, 2, [512, 512]),  # one batch would leave a run idle
        (1000, 3, [334, 334, 332]),
        (1000, 8, [256, 256, 256, 232]),  # never below the floor
        (4096, 2, [1024] * 4),  # big enough: batch_size decides
        (3, 4, [3]),
    ],
)
def test_small_scans_are_spread_over_every_run(hosts: int, runs: int, sizes: list[int]) -> None:
    given = [ip_address(int(ip_address("198.18.0.0")) + n) for n in range(hosts)]

    plan = plan_scan(given, subnet_prefix=32, batch_size=1024, runs=runs)

    assert [len(batch.addresses) for batch in plan.batches] == sizes
    assert sorted(plan.addresses) == given


def test_plan_is_the_same_whatever_the_input_order() -> None:
    given = addresses(*(f"198.51.{third}.{fourth}" for third in (7, 3, 5) for fourth in (9, 1, 4)))

    first = plan_scan(given, subnet_prefix=24, batch_size=2)
    again = plan_scan(list(reversed(given)), subnet_prefix=24, batch_size=2)

    assert first == again
    assert sorted(first.addresses) == sorted(given)
    assert len(first.subnets) == 3


@pytest.mark.parametrize(
    ("address", "prefix", "subnet"),
    [
        ("198.51.100.77", 24, "198.51.100.0/24"),
        ("198.51.100.77", 32, "198.51.100.77/32"),
        ("198.51.100.77", 8, "198.0.0.0/8"),
        ("2001:db8::77", 24, "2001:db8::/64"),
        ("2001:db8::77", 32, "2001:db8::/64"),
    ],
)
def test_subnet_of(address: str, prefix: int, subnet: str) -> None:
    assert subnet_of(ip_address(address), subnet_prefix=prefix) == ip_network(subnet)


@pytest.mark.parametrize(
    ("prefix", "size", "runs"), [(33, 10, 1), (-1, 10, 1), (24, 0, 1), (24, 9, 0)]
)
def test_nonsense_sizes_are_refused(prefix: int, size: int, runs: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        plan_scan(addresses("198.51.100.1"), subnet_prefix=prefix, batch_size=size, runs=runs)


# (max_rate, max_rate_per_subnet, max_concurrent_scans, max_concurrent_per_subnet,
#  capture_slots, expected Pace(runs, per_subnet, run_rate, subnet_rate))
PACES = [
    pytest.param(
        10_000, 5_000, 4, 1, None, Pace(4, 1, 2_500, 5_000), id="connect: share of global"
    ),
    pytest.param(
        10_000, 5_000, 4, 1, 1, Pace(1, 1, 10_000, 5_000), id="raw, one source: whole budget"
    ),
    pytest.param(10_000, 5_000, 4, 1, 2, Pace(2, 1, 5_000, 5_000), id="raw, two sources"),
    pytest.param(10_000, 5_000, 4, 1, 8, Pace(4, 1, 2_500, 5_000), id="more sources than runs"),
    pytest.param(9_000, 9_000, 3, 3, None, Pace(3, 3, 3_000, 3_000), id="per subnet shared"),
    pytest.param(400_000, 200_000, 2, 1, 2, Pace(2, 1, 200_000, 200_000), id="fast"),
    pytest.param(3, 100, 8, 1, None, Pace(3, 1, 1, 100), id="fewer packets than runs"),
    pytest.param(100, 2, 4, 4, None, Pace(4, 2, 25, 1), id="per-subnet rate below concurrency"),
]


@pytest.mark.parametrize(("rate", "subnet_rate", "scans", "per_subnet", "slots", "pace"), PACES)
def test_plan_pace(
    rate: int, subnet_rate: int, scans: int, per_subnet: int, slots: int | None, pace: Pace
) -> None:
    got = plan_pace(
        max_rate=rate,
        max_rate_per_subnet=subnet_rate,
        max_concurrent_scans=scans,
        max_concurrent_per_subnet=per_subnet,
        capture_slots=slots,
    )

    assert got == pace
    # Every run at its share: all runs together, and as many runs as may probe one subnet,
    # stay within the ceilings.
    assert got.runs * got.run_rate <= rate
    assert got.per_subnet * got.subnet_rate <= subnet_rate


def batch_of(*counts: int) -> Batch:
    """A batch of /24s in 198.51.x.0/24 holding `counts` hosts each."""
    subnets = tuple(ip_network(f"198.51.{n}.0/24") for n in range(len(counts)))
    hosts = tuple(
        ip_address(f"198.51.{n}.{h}") for n, count in enumerate(counts) for h in range(1, count + 1)
    )
    return Batch(subnets=subnets, addresses=hosts, index=0)


# (batch's hosts per subnet, Pace(runs, per_subnet, run_rate, subnet_rate), --max-rate, --min-rate):
# the share, less the headroom for nmap's rate meter (97 %)
RATES = [
    pytest.param((254,), Pace(1, 1, 10_000, 5_000), 4_850, 4_850, id="one subnet: its ceiling"),
    pytest.param((254, 254), Pace(1, 1, 10_000, 5_000), 9_700, 9_700, id="two equal: all"),
    pytest.param((254,) * 4, Pace(1, 1, 10_000, 5_000), 9_700, 9_700, id="four: max_rate"),
    pytest.param((200, 50), Pace(1, 1, 10_000, 5_000), 6_062, 6_062, id="unequal: largest"),
    pytest.param(
        (100,) * 4, Pace(4, 1, 2_500, 5_000), 2_425, 2_425, id="connect: run's share of global"
    ),
    pytest.param(
        (10,) * 64, Pace(1, 1, 400_000, 10_000), 388_000, FORCED_RATE_LIMIT, id="floor capped"
    ),
    pytest.param((3,), Pace(4, 2, 25, 1), 1, 1, id="tiny ceilings"),
]


@pytest.mark.parametrize(("counts", "pace", "max_rate", "min_rate"), RATES)
def test_a_run_over_several_subnets_may_use_their_shares_together(
    counts: tuple[int, ...], pace: Pace, max_rate: int, min_rate: int
) -> None:
    batch = batch_of(*counts)

    assert pace.rates(batch) == (max_rate, min_rate)
    # Probes spread over the batch's hosts evenly: no subnet's share above its ceiling.
    if max_rate > 1:
        for count in counts:
            assert max_rate * count // len(batch.addresses) <= pace.subnet_rate
    assert max_rate <= pace.run_rate


def test_the_rates_of_a_planned_scan_follow_its_batches() -> None:
    hosts = [ip_address(f"198.51.{n}.{h}") for n in range(4) for h in range(1, 255)]
    pace = plan_pace(
        max_rate=10_000,
        max_rate_per_subnet=5_000,
        max_concurrent_scans=4,
        max_concurrent_per_subnet=1,
        capture_slots=1,
    )
    (batch,) = plan_scan(hosts, subnet_prefix=24, batch_size=1024, runs=pace.runs).batches

    assert pace.rates(batch) == (9_700, 9_700)
