"""From OpenStack's listings to targets: which public address reaches which server.

Pure, so the join is tested with tables: no I/O and no openstacksdk. Which addresses are
targets depends on Neutron's listings alone (Nova's servers and Keystone's projects only name
them), so a scan can start while Nova is still paging. IPv6 addresses are targets like any
other, never dropped here: the pipeline counts them as not scanned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address

import structlog

from goalkeeper.exceptions import read_allow
from goalkeeper.firewall import PortFirewall, SecurityGroup
from goalkeeper.model import IPAddress, Target

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PortRecord:
    """The part of a Neutron port the inventory needs."""

    id: str
    network_id: str
    device_id: str
    device_owner: str
    addresses: tuple[str, ...]
    project_id: str = ""  # not in a floating IP's port_details: that project is the FIP's
    # None: not read (a floating IP's port_details names no groups), so the firewall is unknown
    security_group_ids: tuple[str, ...] | None = None
    port_security_enabled: bool = True  # Neutron's default, and without the port-security API


NEUTRON_OWNED = "network:"  # neutron-lib's DEVICE_OWNER_NETWORK_PREFIX: routers, FIPs, DHCP


@dataclass(frozen=True, slots=True)
class FloatingIpRecord:
    address: str
    port_id: str | None
    project_id: str


@dataclass(frozen=True, slots=True)
class ServerRecord:
    id: str
    name: str
    project_id: str
    allow: str | None = None  # its metadata's goalkeeper.allow, as written (DESIGN §9)


@dataclass(frozen=True, slots=True)
class Listings:
    """Whole listings, reduced in the thread to what matters: small records, no raw JSON."""

    projects: Mapping[str, str]  # id -> name
    servers: Mapping[str, ServerRecord]
    external_networks: frozenset[str]
    ports: Mapping[str, PortRecord]
    floating_ips: tuple[FloatingIpRecord, ...]
    security_groups: Mapping[str, SecurityGroup] = field(default_factory=dict)  # id -> group


def build_targets(listings: Listings, *, region: str = "") -> tuple[Target, ...]:
    """Floating IPs through their port to the server, then public fixed IPs; one per address;
    each target carries `region`."""
    found: dict[IPAddress, Target] = {}
    firewalls = _Firewalls(listings.security_groups)
    unresolved = 0
    for fip in listings.floating_ips:
        if fip.port_id is None:
            continue  # allocated but attached to nothing: nothing behind it to scan
        port = listings.ports.get(fip.port_id)
        if port is None:
            unresolved += 1  # the port went away between the two listings
            continue
        server = listings.servers.get(port.device_id)
        # A floating IP on a port that is not a server (a load balancer, say) is still a
        # public exposure of that project: keep it, with the port's device as the server.
        project_id = server.project_id if server else fip.project_id
        for address in _addresses(fip.address):
            found.setdefault(
                address, _target(address, server, port, project_id, listings, firewalls, region)
            )
    for port in listings.ports.values():
        if (
            port.network_id not in listings.external_networks
            or not port.device_id
            or port.device_owner.startswith(NEUTRON_OWNED)
        ):
            continue  # Neutron's own ports (routers, floating IPs) live on external networks too
        # A device other than a server (a bare-metal node, a load balancer) with a public
        # address is as exposed as a server: kept, like a floating IP on such a port.
        server = listings.servers.get(port.device_id)
        project_id = server.project_id if server else port.project_id
        for address in _addresses(*port.addresses):
            found.setdefault(
                address, _target(address, server, port, project_id, listings, firewalls, region)
            )
    if unresolved:
        log.warning("floating ips with a vanished port skipped", count=unresolved)
    if firewalls.unknown_groups:
        log.warning("ports naming an unlisted security group", count=firewalls.unknown_groups)
    return tuple(sorted(found.values(), key=lambda t: (t.address.version, int(t.address))))


def _target(
    address: IPAddress,
    server: ServerRecord | None,
    port: PortRecord,
    project_id: str,
    listings: Listings,
    firewalls: _Firewalls,
    region: str,
) -> Target:
    allow, problem = read_allow(server.allow if server else None)
    return Target(
        address=address,
        server_name=server.name if server else f"({port.device_owner or 'unattached port'})",
        server_id=server.id if server else port.device_id,
        project_id=project_id,
        project_name=listings.projects.get(project_id, ""),
        firewall=firewalls.of(port),
        allow=allow,
        allow_problem=problem,
        region=region,
    )


class _Firewalls:
    """Each port's PortFirewall, its groups looked up in the group listing.

    Thousands of ports name the same few group sets (a project's `default` and one more): each
    set's tuple is built once and shared. A port naming a group the listing lacks (made between
    the two listings, or hidden from this user) has an unknown firewall, None, rather than a
    partial one that would hide the rule behind an exposure.
    """

    def __init__(self, groups: Mapping[str, SecurityGroup]) -> None:
        self.groups = groups
        self.unknown_groups = 0
        self._sets: dict[tuple[str, ...], tuple[SecurityGroup, ...] | None] = {}

    def of(self, port: PortRecord) -> PortFirewall | None:
        ids = port.security_group_ids
        if ids is None:
            return None
        if ids not in self._sets:
            found = tuple(self.groups[i] for i in ids if i in self.groups)
            self._sets[ids] = found if len(found) == len(ids) else None
        groups = self._sets[ids]
        if not port.port_security_enabled:  # no group applies: which ones it names is moot
            return PortFirewall(port.id, False, groups or ())
        if groups is None:
            self.unknown_groups += 1
            return None
        return PortFirewall(port.id, True, groups)


def _addresses(*texts: str | None) -> Iterable[IPAddress]:
    """IPv4 and IPv6 alike; text that is not an address (none at all, say) is no target."""
    for text in texts:
        try:
            yield ip_address(text or "")
        except ValueError:
            continue
