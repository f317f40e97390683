"""The scan plan is pure arithmetic: tables of addresses in, batches out."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from goalkeeper.model import IPAddress
from goalkeeper.scanning.planner import plan_scan, subnet_of


def addresses(*texts: str) -> list[IPAddress]:
    return [ip_address(text) for text in texts]


# (addresses in, subnet_prefix, batch_size, expected batches as (subnet, addresses))
PLANS = [
    pytest.param([], 24, 4, [], id="nothing to scan"),
    pytest.param(
        ["198.51.100.7", "198.51.100.3", "198.51.100.5"],
        24,
        256,
        [("198.51.100.0/24", ["198.51.100.3", "198.51.100.5", "198.51.100.7"])],
        id="one subnet, sorted",
    ),
    pytest.param(
        ["198.51.100.9", "198.51.100.9", "198.51.100.1"],
        24,
        256,
        [("198.51.100.0/24", ["198.51.100.1", "198.51.100.9"])],
        id="duplicates removed",
    ),
    pytest.param(
        ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5"],
        24,
        2,
        [
            ("198.51.100.0/24", ["198.51.100.1", "198.51.100.2"]),
            ("198.51.100.0/24", ["198.51.100.3", "198.51.100.4"]),
            ("198.51.100.0/24", ["198.51.100.5"]),
        ],
        id="split into batches of batch_size",
    ),
    pytest.param(
        ["203.0.113.5", "198.51.100.200", "203.0.113.1", "198.51.100.2"],
        24,
        256,
        [
            ("198.51.100.0/24", ["198.51.100.2", "198.51.100.200"]),
            ("203.0.113.0/24", ["203.0.113.1", "203.0.113.5"]),
        ],
        id="grouped by subnet, subnets ascending",
    ),
    pytest.param(
        ["198.51.100.1", "198.51.100.200"],
        25,
        256,
        [("198.51.100.0/25", ["198.51.100.1"]), ("198.51.100.128/25", ["198.51.100.200"])],
        id="subnet_prefix decides the subnet",
    ),
    pytest.param(
        ["198.51.100.1", "198.51.101.1", "198.51.102.1"],
        16,
        2,
        [
            ("198.51.0.0/16", ["198.51.100.1", "198.51.101.1"]),
            ("198.51.0.0/16", ["198.51.102.1"]),
        ],
        id="wide subnet",
    ),
    pytest.param(
        ["2001:db8:0:1::5", "198.51.100.1", "2001:db8:0:1:ffff::1", "2001:db8:0:2::1"],
        24,
        256,
        [
            ("198.51.100.0/24", ["198.51.100.1"]),
            ("2001:db8:0:1::/64", ["2001:db8:0:1::5", "2001:db8:0:1:ffff::1"]),
            ("2001:db8:0:2::/64", ["2001:db8:0:2::1"]),
        ],
        id="IPv6 grouped by /64, after IPv4",
    ),
]


@pytest.mark.parametrize(("given", "prefix", "size", "expected"), PLANS)
def test_plan_scan(
    given: list[str], prefix: int, size: int, expected: list[tuple[str, list[str]]]
) -> None:
    plan = plan_scan(addresses(*given), subnet_prefix=prefix, batch_size=size)

    got = [(str(b.subnet), [str(a) for a in b.addresses]) for b in plan.batches]
    assert got == expected
    assert [batch.index for batch in plan.batches] == list(range(len(expected)))


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


@pytest.mark.parametrize(("prefix", "size"), [(33, 10), (-1, 10), (24, 0)])
def test_nonsense_sizes_are_refused(prefix: int, size: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        plan_scan(addresses("198.51.100.1"), subnet_prefix=prefix, batch_size=size)
