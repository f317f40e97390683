"""A hand-written inventory file (inventory.source: static), for small clouds, labs and the demo.

The file is read on every tick, so edits apply without a restart. Any entry outside
`scan.allowed_networks` makes the whole file invalid (a configuration error naming the entry):
a static file is written by the operator, so a wrong address there is a mistake to fix, not
something to skip quietly. IPv6 entries are held to the same rule; an IPv6 network entry may
stand for at most `inventory.static_max_ipv6_network` addresses (a /64 is never expanded). This
module reads one local file; it never touches the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from goalkeeper import logs
from goalkeeper.aio import Clock, utc_now
from goalkeeper.config import ConfigError, Network, Problem, Settings
from goalkeeper.exceptions import read_allow
from goalkeeper.mailaddress import customer_owner, mail_address_problem
from goalkeeper.model import AddressesKnown, Inventory, IPAddress, Target
from goalkeeper.scope import contains
from goalkeeper.yamlfile import UnreadableFile, key_path, read_yaml

log = logs.get_logger(__name__)
MAX_NETWORK_ADDRESSES = 65536
MAX_IPV6_NETWORK_ADDRESSES = 256  # inventory.static_max_ipv6_network's default
# About 40,000 entries; the bounds stop a wrong path (a device, a log) or a YAML bomb.
MAX_FILE_BYTES = 8 << 20
MAX_FILE_VALUES = 1_000_000


class StaticEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = None
    network: str | None = None
    server_name: str = ""
    server_id: str = ""
    project_id: str = ""
    project_name: str = ""
    owner_name: str | None = None
    owner_email: str | None = None
    allow: str | None = None  # as a server's goalkeeper.allow metadata (DESIGN §9)

    @model_validator(mode="after")
    def _one_of(self) -> StaticEntry:
        if (self.address is None) == (self.network is None):
            raise ValueError("give exactly one of address or network")
        return self


class StaticFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: tuple[StaticEntry, ...] = ()


def resolve_static_path(settings: Settings, config_path: Path) -> Path:
    """A relative static_file is found next to the config file, as operators mount them together."""
    path = settings.inventory.static_file
    return path if path.is_absolute() else config_path.parent / path


def read_static_targets(
    path: Path,
    *,
    allowed: Iterable[Network],
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
    max_ipv6_network: int = MAX_IPV6_NETWORK_ADDRESSES,
) -> tuple[Target, ...]:
    """Every target of the file, one per address; raise ConfigError listing every problem with
    its entry.

    Two entries giving one address to two owners are an error naming both: which of them is
    mailed must not depend on which copy a lookup happens to keep. The same address twice with
    the same owner is only said to `warn`; the address entry wins over a network, else the first.
    An owner_email that cannot be mailed to is an error when `strict` (config load, check-config);
    in a tick it leaves that owner NOT FOUND with the reason, so one typo stops nobody else's mail.
    An `allow` that cannot be read is the same: an error when `strict`, else told to the owner
    in their next report, as an unreadable goalkeeper.allow on a cloud server is.
    """
    source = str(path)
    allowed = tuple(allowed)
    parsed = _read_file(path, source)
    targets: dict[IPAddress, tuple[int, Target]] = {}  # address -> (entry index, target)
    overlaps: dict[tuple[int, int], list[IPAddress]] = {}  # (earlier, later entry) -> addresses
    problems: list[Problem] = []
    for index, entry in enumerate(parsed.targets):
        key = f"targets[{index}]"
        if strict:
            problems += _entry_problems(entry, key, source)
        try:
            expanded = list(_expand(entry, max_ipv6_network=max_ipv6_network))
        except ValueError as err:
            problems.append(Problem(source=source, key=key, message=str(err)))
            continue
        outside = _outside(entry, expanded, allowed)
        if outside:
            problems.append(Problem(source=source, key=key, message=outside))
            continue
        for target in expanded:
            earlier = targets.get(target.address)
            if earlier is None:
                targets[target.address] = (index, target)
                continue
            overlaps.setdefault((earlier[0], index), []).append(target.address)
            if entry.address is not None and parsed.targets[earlier[0]].network is not None:
                targets[target.address] = (index, target)  # the more specific entry
    problems += _overlap_problems(parsed, overlaps, source=source, warn=warn)
    if problems:
        raise ConfigError(problems)
    return tuple(target for _, target in targets.values())


def _entry_problems(entry: StaticEntry, key: str, source: str) -> list[Problem]:
    """What only a strict read refuses: an owner address or an allow value that cannot be used."""
    found = {
        "owner_email": mail_address_problem(entry.owner_email) if entry.owner_email else None,
        "allow": read_allow(entry.allow)[1],
    }
    return [
        Problem(source=source, key=f"{key}.{name}", message=why)
        for name, why in found.items()
        if why
    ]


def _overlap_problems(
    parsed: StaticFile,
    overlaps: Mapping[tuple[int, int], list[IPAddress]],
    *,
    source: str,
    warn: Callable[[str], None] | None,
) -> list[Problem]:
    """An address two entries give to two owners is a problem; to one owner, only a warning."""
    problems: list[Problem] = []
    for (first, second), addresses in overlaps.items():
        a, b = parsed.targets[first], parsed.targets[second]
        both = f"targets[{first}] ({_describe(a)}) and targets[{second}] ({_describe(b)})"
        what = f"{addresses[0]}" + (f" and {len(addresses) - 1} more" if len(addresses) > 1 else "")
        if _owner_of(a) != _owner_of(b):
            problems.append(
                Problem(
                    source=source,
                    key=f"targets[{second}]",
                    message=f"{what} listed in {both} with two owners ({_owner_of(a)} and "
                    f"{_owner_of(b)}): an address has one owner; remove it from one entry",
                )
            )
        elif warn is not None:
            warn(f"{source}: {what} listed twice, in {both}, with the same owner")
    return problems


def _read_file(path: Path, source: str) -> StaticFile:
    try:
        raw = read_yaml(path, max_bytes=MAX_FILE_BYTES, max_nodes=MAX_FILE_VALUES)
    except UnreadableFile as err:
        raise ConfigError([Problem(source=source, key="", message=str(err))]) from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(
            [Problem(source=source, key="", message="the top level must be a mapping")]
        )
    try:
        return StaticFile.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(
            [
                Problem(source=source, key=key_path(e["loc"]), message=e["msg"])
                for e in err.errors(include_url=False, include_input=False)
            ]
        ) from None


def _outside(entry: StaticEntry, expanded: list[Target], allowed: tuple[Network, ...]) -> str:
    """Why `entry` reaches past scan.allowed_networks, or "" when it does not."""
    outside = [t.address for t in expanded if not contains(allowed, t.address)]
    if not outside:
        return ""
    what = entry.address or entry.network
    return (
        f"{what} ({entry.server_name or 'no name'}) is outside "
        f"scan.allowed_networks ({len(outside)} address(es), e.g. {outside[0]})"
    )


class StaticInventory:
    """InventorySource over a static file, read again on every fetch."""

    def __init__(
        self,
        path: Path,
        *,
        allowed: Iterable[Network],
        clock: Clock = utc_now,
        max_ipv6_network: int = MAX_IPV6_NETWORK_ADDRESSES,
    ) -> None:
        self.path = path
        self.allowed = tuple(allowed)
        self.clock = clock
        self.max_ipv6_network = max_ipv6_network

    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory:
        """The file's targets; read at once, so nothing is announced before (`on_addresses` is
        never called)."""
        targets = read_static_targets(
            self.path,
            allowed=self.allowed,
            warn=_log_warning,
            max_ipv6_network=self.max_ipv6_network,
        )
        return Inventory(targets=targets, fetched_at=self.clock(), source=f"static:{self.path}")


def _expand(entry: StaticEntry, *, max_ipv6_network: int) -> Iterable[Target]:
    owner = customer_owner(entry.owner_name, entry.owner_email)
    allow, problem = read_allow(entry.allow)
    common: dict[str, Any] = {
        "allow": allow,
        "allow_problem": problem,
        "server_name": entry.server_name,
        "server_id": entry.server_id,
        "project_id": entry.project_id,
        "project_name": entry.project_name,
        "owner": owner,
    }
    if entry.address is not None:
        try:
            address = ip_address(entry.address.strip())
        except ValueError:
            raise ValueError(f"not an IP address: {entry.address!r}") from None
        return [Target(address=address, **common)]
    try:
        network = ip_network(str(entry.network).strip(), strict=True)
    except ValueError as err:
        raise ValueError(f"not a CIDR network: {entry.network!r} ({err})") from None
    if network.version == 6 and network.num_addresses > max_ipv6_network:
        raise ValueError(
            f"{network} has {network.num_addresses} addresses, more than an IPv6 network entry may "
            f"stand for ({max_ipv6_network}, inventory.static_max_ipv6_network): list the "
            "servers' addresses instead; an IPv6 network is never expanded whole"
        )
    if network.num_addresses > MAX_NETWORK_ADDRESSES:
        raise ValueError(f"{network} has more than {MAX_NETWORK_ADDRESSES} addresses")
    # An IPv4 network's first and last addresses name the network and its broadcast, never a
    # server: a /24 means its 254 hosts. A /31 (RFC 3021 point-to-point) and a /32 have no such
    # addresses; IPv6 has no broadcast, so every address of an IPv6 network is meant.
    addresses = network.hosts() if network.version == 4 and network.prefixlen < 31 else network
    return [Target(address=address, **common) for address in addresses]


def _describe(entry: StaticEntry) -> str:
    return f"{entry.address or entry.network}, {entry.server_name or 'no name'}"


def _owner_of(entry: StaticEntry) -> str:
    """Who an entry's mail goes to, as the operator wrote it."""
    if entry.owner_email is None:
        return f"{entry.owner_name or 'no owner'} (NOT FOUND)"
    return f"{entry.owner_name or 'no name'} <{entry.owner_email.strip().lower()}>"


def _log_warning(text: str) -> None:
    log.warning("static inventory", problem=text)
