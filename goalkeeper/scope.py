"""The safety rule: which addresses may be scanned at all.

Nothing outside `scan.allowed_networks` is ever scanned and nothing inside `scan.exclude`. Every
address the scanner sees has passed through `select_targets`; the scanner checks it again. Pure:
no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from goalkeeper.config import Network
from goalkeeper.model import IPAddress, Target


@dataclass(frozen=True, slots=True)
class Selection:
    targets: tuple[Target, ...]  # in scope, one per address, inventory order
    refused: tuple[Target, ...]  # outside allowed_networks
    excluded: tuple[Target, ...]  # inside exclude
    duplicates: int = 0  # the same address listed again (the first entry wins)


def contains(networks: Iterable[Network], address: IPAddress) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def in_scope(
    addresses: Iterable[IPAddress], *, allowed: Sequence[Network], exclude: Sequence[Network]
) -> list[IPAddress]:
    """The addresses select_targets would select, sorted: allowed, and not excluded."""
    chosen = {a for a in addresses if contains(allowed, a) and not contains(exclude, a)}
    return sorted(chosen, key=lambda a: (a.version, int(a)))


def select_targets(
    targets: Iterable[Target], *, allowed: Sequence[Network], exclude: Sequence[Network]
) -> Selection:
    selected: list[Target] = []
    refused: list[Target] = []
    excluded: list[Target] = []
    seen: set[IPAddress] = set()
    duplicates = 0
    for target in targets:
        if target.address in seen:
            duplicates += 1
            continue
        seen.add(target.address)
        if not contains(allowed, target.address):
            refused.append(target)
        elif contains(exclude, target.address):
            excluded.append(target)
        else:
            selected.append(target)
    return Selection(tuple(selected), tuple(refused), tuple(excluded), duplicates)
