"""Whether a configuration may run: `load_settings()` and every check beyond one field's own.

The schema (goalkeeper.config) checks each value; this module adds what needs several sections
or the disk: Fleio configured by halves, the static inventory file, the cron schedule firing,
the scope being empty, and provider exceptions outside the scope. Each check names the sections
it reads, and runs whenever those are valid, so `check-config` reports every problem at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from goalkeeper.config import ConfigError, Network, Problem, Settings
from goalkeeper.configsources import Loaded, read
from goalkeeper.inventory.static import read_static_targets, resolve_static_path
from goalkeeper.model import IPAddress
from goalkeeper.schedule import schedule_problems


def load_settings(path: Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate everything a tick depends on; raise ConfigError listing every problem."""
    loaded = read(path, environ=environ)
    problems = list(loaded.problems)
    settings = loaded.partial  # None when the file or the variables could not be read at all
    if settings is not None:
        for sections, check in _CHECKS:
            if not sections & loaded.invalid_sections:
                problems += check(settings, loaded)
    if problems or loaded.settings is None:
        raise ConfigError(problems)
    return loaded.settings


def scope_problem(settings: Settings) -> str | None:
    """Why nothing could be scanned with these settings, or None. `check-config`, `run` and
    `scan` all refuse it (exit 2), in the same words; `findings` does not need a scope."""
    if not settings.scan.allowed_networks:
        return (
            "scan.allowed_networks is empty, so nothing may be scanned: set it to the cloud's "
            "public ranges, e.g. allowed_networks: [203.0.113.0/24] "
            "(or GOALKEEPER_SCAN__ALLOWED_NETWORKS='[\"203.0.113.0/24\"]')"
        )
    return None


def billing_problems(settings: Settings, loaded: Loaded) -> list[Problem]:
    """Fleio half configured: owners would silently all be NOT FOUND, so refuse to start."""
    fleio = settings.inventory.fleio
    if settings.inventory.source != "openstack" or not fleio.wanted:
        return []
    off = "or set inventory.fleio.enabled: false to run without owners (all NOT FOUND)"
    problems = []
    if fleio.url is None:
        problems.append(
            Problem(
                source=loaded.source_of("inventory.fleio.url"),
                key="inventory.fleio.url",
                message=f"Fleio's staff API URL is needed for owner lookups; set it, {off}",
            )
        )
    if fleio.token is None:
        problems.append(
            Problem(
                source=loaded.source_of("inventory.fleio.token"),
                key="inventory.fleio.token",
                message=f"set GOALKEEPER_INVENTORY__FLEIO__TOKEN (Fleio's staff API token), {off}",
            )
        )
    return problems


def static_inventory_problems(settings: Settings, config_path: Path) -> list[Problem]:
    """The static file must be valid and inside the allowed networks."""
    if settings.inventory.source != "static":
        return []
    try:
        read_static_targets(
            resolve_static_path(settings, config_path),
            allowed=settings.scan.allowed_networks,
            strict=True,
            max_ipv6_network=settings.inventory.static_max_ipv6_network,
        )
    except ConfigError as err:
        return list(err.problems)
    return []


def static_inventory_warnings(settings: Settings, config_path: Path) -> list[str]:
    """What check-config says of a valid static file that still looks like a slip."""
    if settings.inventory.source != "static":
        return []
    warnings: list[str] = []
    try:
        read_static_targets(
            resolve_static_path(settings, config_path),
            allowed=settings.scan.allowed_networks,
            warn=warnings.append,
            max_ipv6_network=settings.inventory.static_max_ipv6_network,
        )
    except ConfigError:
        return []  # reported as problems by static_inventory_problems
    return warnings


def exception_problems(settings: Settings, loaded: Loaded) -> list[Problem]:
    """A provider exception for an address or network no scan reaches could never apply: a
    typo that would let the operator believe a port is accepted while it is reported."""
    allowed = settings.scan.allowed_networks
    problems = []
    for index, entry in enumerate(settings.exceptions):
        rule = entry.rule()
        where = rule.network or rule.address
        if where is None or not allowed:  # a project, or no scope at all (said elsewhere)
            continue
        if not any(_overlaps(where, network) for network in allowed):
            problems.append(
                Problem(
                    source=loaded.source_of("exceptions"),
                    key=f"exceptions[{index}]",
                    message=f"{where} is outside scan.allowed_networks, so this exception "
                    "could never apply",
                )
            )
    return problems


def _overlaps(where: Network | IPAddress, network: Network) -> bool:
    if where.version != network.version:
        return False
    if isinstance(where, IPv4Network | IPv6Network):
        return where.overlaps(network)
    return where in network


def _static_check(settings: Settings, loaded: Loaded) -> list[Problem]:
    return static_inventory_problems(settings, loaded.path)


def _schedule_check(settings: Settings, loaded: Loaded) -> list[Problem]:
    source = loaded.source_of("schedule.cron")
    return [
        Problem(source=source, key="schedule.cron", message=message)
        for message in schedule_problems(settings.schedule)
    ]


# Each check and the sections it reads: it runs when none of them is invalid.
_CHECKS: tuple[tuple[frozenset[str], Callable[[Settings, Loaded], list[Problem]]], ...] = (
    (frozenset({"inventory"}), billing_problems),
    (frozenset({"inventory", "scan"}), _static_check),
    (frozenset({"schedule"}), _schedule_check),
    (frozenset({"exceptions", "scan"}), exception_problems),
)
