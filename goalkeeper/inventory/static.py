"""A hand-written inventory file (inventory.source: static), for small clouds, labs and the demo.

The file is read on every tick, so edits apply without a restart. Any entry outside
`scan.allowed_networks` makes the whole file invalid (a configuration error naming the entry):
a static file is written by the operator, so a wrong address there is a mistake to fix, not
something to skip quietly. This module reads one local file; it never touches the network.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from goalkeeper.aio import Clock, utc_now
from goalkeeper.config import ConfigError, Network, Problem, Settings
from goalkeeper.model import AddressesKnown, Inventory, Owner, Target, is_mail_address
from goalkeeper.scope import contains

MAX_NETWORK_ADDRESSES = 65536


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

    @field_validator("owner_email")
    @classmethod
    def _mail_address(cls, value: str | None) -> str | None:
        if value is not None and not is_mail_address(value):
            raise ValueError(f"not an e-mail address: {value!r}")
        return value

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


def read_static_targets(path: Path, *, allowed: Iterable[Network]) -> tuple[Target, ...]:
    """Every target of the file; raise ConfigError listing every problem with its entry."""
    source = str(path)
    allowed = tuple(allowed)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([Problem(source=source, key="", message="file not found")]) from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError([Problem(source=source, key="", message=f"unreadable: {err}")]) from None
    try:
        parsed = StaticFile.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(
            [
                Problem(source=source, key=_dotted(e["loc"]), message=e["msg"])
                for e in err.errors(include_url=False, include_input=False)
            ]
        ) from None
    targets: list[Target] = []
    problems: list[Problem] = []
    for index, entry in enumerate(parsed.targets):
        key = f"targets[{index}]"
        try:
            expanded = list(_expand(entry))
        except ValueError as err:
            problems.append(Problem(source=source, key=key, message=str(err)))
            continue
        outside = [t.address for t in expanded if not contains(allowed, t.address)]
        if outside:
            what = entry.address or entry.network
            problems.append(
                Problem(
                    source=source,
                    key=key,
                    message=f"{what} ({entry.server_name or 'no name'}) is outside "
                    f"scan.allowed_networks ({len(outside)} address(es), e.g. {outside[0]})",
                )
            )
            continue
        targets.extend(expanded)
    if problems:
        raise ConfigError(problems)
    return tuple(targets)


def static_inventory_problems(settings: Settings, config_path: Path) -> list[Problem]:
    """A config check: the static file must be valid and inside the allowed networks."""
    if settings.inventory.source != "static":
        return []
    try:
        read_static_targets(
            resolve_static_path(settings, config_path), allowed=settings.scan.allowed_networks
        )
    except ConfigError as err:
        return list(err.problems)
    return []


class StaticInventory:
    """InventorySource over a static file, read again on every fetch."""

    def __init__(
        self,
        path: Path,
        *,
        allowed: Iterable[Network],
        clock: Clock = utc_now,
    ) -> None:
        self.path = path
        self.allowed = tuple(allowed)
        self.clock = clock

    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory:
        """The file's targets; read at once, so nothing is announced before (`on_addresses` is
        never called)."""
        targets = read_static_targets(self.path, allowed=self.allowed)
        return Inventory(targets=targets, fetched_at=self.clock(), source=f"static:{self.path}")


def _expand(entry: StaticEntry) -> Iterable[Target]:
    owner = Owner(name=entry.owner_name, email=entry.owner_email)
    common: dict[str, Any] = {
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
    if network.num_addresses > MAX_NETWORK_ADDRESSES:
        raise ValueError(f"{network} has more than {MAX_NETWORK_ADDRESSES} addresses")
    return [Target(address=address, **common) for address in network]


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
