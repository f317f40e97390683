"""The safety rule: which addresses may be scanned at all.

Nothing outside `scan.allowed_networks` is ever scanned and nothing inside `scan.exclude`, nor
any address that is not a remote host's, whatever the networks say (`unscannable` lists them
with the reason). Every address the scanner sees has passed through `select_targets`, and the
scanner checks `unscannable` again. IPv4 and IPv6 are held to the same rules (an IPv6 address
is compared with IPv6 networks only). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address

from goalkeeper.config import Network
from goalkeeper.model import IPAddress, Target

OUTSIDE = "outside scan.allowed_networks"
EXCLUDED = "inside scan.exclude"
_THIS_NETWORK = IPv4Network("0.0.0.0/8")
_LIMITED_BROADCAST = IPv4Address("255.255.255.255")


@dataclass(frozen=True, slots=True)
class Selection:
    targets: tuple[Target, ...]  # in scope, one per address, inventory order
    refused: tuple[Target, ...]  # outside allowed_networks, or never a target (see `why`)
    excluded: tuple[Target, ...]  # inside exclude
    duplicates: int = 0  # the same address listed again (the first entry wins)
    why: Mapping[IPAddress, str] = field(default_factory=dict)  # refused address -> reason


def unscannable(address: IPAddress, *, loopback: bool = False) -> str | None:
    """Why `address` is never scanned whatever the configured networks say, or None.

    The unspecified address and 0.0.0.0/8 (the kernel sends them to this host), loopback (unless
    `loopback`, for tests and the demo), multicast, the limited broadcast, link-local, and an
    IPv4-mapped IPv6 address (nmap reaches it over IPv4, past an IPv4 `exclude`). Other
    embeddings of IPv4 in IPv6 (6to4, NAT64, Teredo) are compared as the IPv6 addresses they
    are; subnet-directed broadcasts cannot be known from an address alone.
    """
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address: nmap would reach its IPv4 address past exclude"
    if address.is_unspecified or (address.version == 4 and address in _THIS_NETWORK):
        return "the unspecified address or 0.0.0.0/8: the kernel sends it to this host"
    if address.is_loopback and not loopback:
        return "a loopback address: this host (scan.allow_loopback is for tests and the demo)"
    if address.is_multicast or address == _LIMITED_BROADCAST:
        return "a multicast or broadcast address"
    if address.is_link_local:
        return "a link-local address"
    return None


def contains(networks: Iterable[Network], address: IPAddress) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def refusal(
    address: IPAddress, *, allowed: Sequence[Network], exclude: Sequence[Network], loopback: bool
) -> str | None:
    """Why `address` is not scanned (never a target, OUTSIDE or EXCLUDED), or None."""
    why = unscannable(address, loopback=loopback)
    if why is not None:
        return why
    if not contains(allowed, address):
        return OUTSIDE
    if contains(exclude, address):
        return EXCLUDED
    return None


def in_scope(
    addresses: Iterable[IPAddress],
    *,
    allowed: Sequence[Network],
    exclude: Sequence[Network],
    loopback: bool = False,
) -> list[IPAddress]:
    """The addresses select_targets would select, sorted."""
    chosen = {
        a
        for a in addresses
        if refusal(a, allowed=allowed, exclude=exclude, loopback=loopback) is None
    }
    return sorted(chosen, key=lambda a: (a.version, int(a)))


def select_targets(
    targets: Iterable[Target],
    *,
    allowed: Sequence[Network],
    exclude: Sequence[Network],
    loopback: bool = False,
) -> Selection:
    selected: list[Target] = []
    refused: list[Target] = []
    excluded: list[Target] = []
    why: dict[IPAddress, str] = {}
    seen: set[IPAddress] = set()
    duplicates = 0
    for target in targets:
        if target.address in seen:
            duplicates += 1
            continue
        seen.add(target.address)
        reason = refusal(target.address, allowed=allowed, exclude=exclude, loopback=loopback)
        if reason is None:
            selected.append(target)
        elif reason == EXCLUDED:
            excluded.append(target)
        else:
            refused.append(target)
            why[target.address] = reason
    return Selection(tuple(selected), tuple(refused), tuple(excluded), duplicates, why)
