"""The simulated cloud's contents: projects, servers, ports, floating IPs, billing clients.

One seed and a few sizes give the same world every time, so the demo, the tests and the
benchmarks agree on what "right" is. This module is pure: it draws from its own
`random.Random(seed)`, never reads the clock, the network or the environment, and never serves
anything (openstack.py and fleio.py beside it do). Every address it hands out, public or private,
lies inside `address_base`, which must be in 127.0.0.0/8: whatever scans this world only ever
reaches loopback. Some public fixed ports also carry an IPv6 address, from `ipv6_base` inside
fd00::/8 (unique local, never routed): targets the inventory must report, which are not scanned
yet and so are never played by listeners (`exposed` is IPv4 only).
Past 300 lines: one seeded generator, whose draws must keep their order for a seed's world.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from goalkeeper.model import IPAddress, PortSpec, Transport
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper_sim.world_firewalls import SecurityGroup, SecurityGroupRule, add_firewalls

LOOPBACK = IPv4Network("127.0.0.0/8")
ALLOW_KEY = "goalkeeper.allow"  # as a customer sets it: openstack server set --property ...
DNS_REASON = "public DNS resolver for our customers"
UNREADABLE_ALLOW = "6379/tcp;until=2027-13-01;reason=cache for the web servers"
DEFAULT_ADDRESS_BASE = "127.64.0.0/14"  # clear of 127.0.0.0/16 and of other suites' 127.42.0.0/16
UNIQUE_LOCAL = IPv6Network("fd00::/8")
DEFAULT_IPV6_BASE = "fd00:64::/64"  # the public-direct network's IPv6 subnet
# Subnet ids of IPv6 subnets are derived from their network's id, not drawn: adding them left
# every other value a seed gives as it was.
_IPV6_SUBNET_IDS = uuid.UUID("6b6a2f1e-5d4c-4b3a-9f8e-7d6c5b4a3f2e")
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_NAMES = "acme globex initech umbrella hooli stark wayne tyrell wonka cyberdyne soylent aperture"
_WORDS = tuple(f"{_NAMES} massive vandelay pied oscorp".split())
_ROLES = ("web", "db", "cache", "worker", "api", "mail", "vpn", "build", "search", "queue")
_FIRST = ("Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Radia")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Perlman")


@dataclass(frozen=True, slots=True)
class Client:
    """A billing customer in Fleio."""

    id: int
    first_name: str
    last_name: str
    company: str
    email: str


@dataclass(frozen=True, slots=True)
class Project:
    """A Keystone project; `service_id` is its Fleio billing service, None if billing lacks it."""

    id: str
    name: str
    fleio_id: int
    service_id: int | None


@dataclass(frozen=True, slots=True)
class BillingService:
    """A Fleio billing service: the link from an OpenStack project to the client who pays."""

    id: int
    client_id: int
    project_id: str


@dataclass(frozen=True, slots=True)
class Network:
    """A Neutron network with its IPv4 subnet, and maybe an IPv6 one."""

    id: str
    name: str
    project_id: str
    external: bool
    subnet_id: str
    cidr: IPv4Network
    subnet6_id: str | None = None
    cidr6: IPv6Network | None = None


@dataclass(frozen=True, slots=True)
class Port:
    """A Neutron port with one IPv4 address, maybe an IPv6 one; `device_owner` says what it
    belongs to."""

    id: str
    network_id: str
    project_id: str
    device_id: str
    device_owner: str
    mac: str
    address: IPv4Address
    security_group_ids: tuple[str, ...] = ()
    address6: IPv6Address | None = None
    port_security_enabled: bool = True  # False: Neutron filters nothing, whatever the groups


@dataclass(frozen=True, slots=True)
class Server:
    """A Nova server; `services` are the dangerous services it leaves open on every address."""

    id: str
    name: str
    project_id: str
    created: datetime
    port_ids: tuple[str, ...]
    services: tuple[PortSpec, ...] = ()
    # Nova's server `metadata`: string keys to string values (Compute API, "Show Server Details").
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FloatingIp:
    """A Neutron floating IP; unassociated when `port_id` is None."""

    id: str
    address: IPv4Address
    project_id: str
    network_id: str
    port_id: str | None
    fixed_address: IPv4Address | None


@dataclass(frozen=True, slots=True)
class World:
    """Everything the simulated cloud knows. Replace parts with `dataclasses.replace`."""

    seed: int
    admin_project_id: str  # the operator's own project, where Goalkeeper's user is scoped
    projects: tuple[Project, ...]
    clients: tuple[Client, ...]
    services: tuple[BillingService, ...]
    networks: tuple[Network, ...]
    ports: tuple[Port, ...]
    servers: tuple[Server, ...]
    floating_ips: tuple[FloatingIp, ...]
    security_groups: tuple[SecurityGroup, ...]

    def public_addresses(self) -> dict[IPv4Address, Server]:
        """Every public IPv4 address that reaches a server: the targets a correct inventory
        finds and scans (`public_ipv6_addresses` are the others)."""
        by_port = {port.id: port for port in self.ports}
        servers = {server.id: server for server in self.servers}
        external = {network.id for network in self.networks if network.external}
        found: dict[IPv4Address, Server] = {}
        for fip in self.floating_ips:
            port = by_port.get(fip.port_id or "")
            if port is not None and port.device_id in servers:
                found[fip.address] = servers[port.device_id]
        for port in self.ports:
            if port.network_id in external and port.device_id in servers:
                found[port.address] = servers[port.device_id]
        return found

    def public_ipv6_addresses(self) -> dict[IPv6Address, Server]:
        """Every public IPv6 address of a server: targets too, scanned with nmap -6."""
        servers = {server.id: server for server in self.servers}
        external = {network.id for network in self.networks if network.external}
        return {
            port.address6: servers[port.device_id]
            for port in self.ports
            if port.address6 is not None
            and port.network_id in external
            and port.device_id in servers
        }

    def inventory_addresses(self) -> dict[IPAddress, Server]:
        """Every public address of a server, IPv4 and IPv6: what a correct inventory lists."""
        both = (self.public_addresses(), self.public_ipv6_addresses())
        return {address: server for found in both for address, server in found.items()}

    def exposed(self) -> list[tuple[IPv4Address, int, Transport]]:
        """Every (address, port, transport) that answers: what the listeners must play."""
        return sorted(
            (address, spec.port, spec.protocol)
            for address, server in self.public_addresses().items()
            for spec in server.services
        )

    def project(self, project_id: str) -> Project:
        return next(p for p in self.projects if p.id == project_id)

    def client_of(self, project_id: str) -> Client | None:
        project = self.project(project_id)
        service = next((s for s in self.services if s.id == project.service_id), None)
        return next((c for c in self.clients if service and c.id == service.client_id), None)


def build_world(
    seed: int,
    *,
    projects: int = 10,
    servers_per_project: int = 5,
    floating_ip_share: float = 0.6,
    public_fixed_share: float = 0.2,
    unknown_project_share: float = 0.1,
    open_share: float = 0.3,
    unassociated_floating_ips: int = 2,
    address_base: str = DEFAULT_ADDRESS_BASE,
    services: Sequence[PortSpec] | None = None,
    ipv6_share: float = 0.5,
    ipv6_base: str = DEFAULT_IPV6_BASE,
    exceptions_until: date | None = None,
) -> World:
    """A world of `projects` x `servers_per_project` servers. Shares are exact, rounded counts.

    `floating_ip_share` and `public_fixed_share` are shares of all servers (a server gets one
    or the other); `open_share` is the share of servers with a public address that leave one or
    two of `services` (default: the dangerous-port catalog; ports below 1024 need root to be
    played by the listeners). `address_base` is split in four: floating IPs, public fixed IPs,
    tenant networks, unused. `ipv6_share` of the public fixed ports (the first ones) also get an
    address from `ipv6_base`, as a dual-stack external network gives them.
    With `exceptions_until`, the first owned server with open services leaves DNS (53/udp) and
    Redis (6379/tcp) open and accepts 53/udp in its `goalkeeper.allow` metadata until that day;
    the next one has a value that cannot be read (DESIGN §9).
    """
    base = IPv4Network(address_base)
    if not base.subnet_of(LOOPBACK):
        raise ValueError(f"address_base {base} is outside 127.0.0.0/8: the sim stays on loopback")
    base6 = IPv6Network(ipv6_base)
    if not base6.subnet_of(UNIQUE_LOCAL):
        raise ValueError(f"ipv6_base {base6} is outside fd00::/8: the sim stays unroutable")
    if not 0 <= servers_per_project <= 250:
        raise ValueError("servers_per_project must be between 0 and 250 (one /24 per project)")
    rng = random.Random(seed)
    builder = _Builder(rng, base, base6)
    project_ids = [uuid.UUID(int=rng.getrandbits(128), version=4).hex for _ in range(projects)]
    unknown = _take(rng, project_ids, round(projects * unknown_project_share))
    clients = [builder.client(number) for number in range(1, max(1, round(projects * 0.7)) + 1)]
    project_list, billing = [], []
    for index, project_id in enumerate(project_ids):
        service_id = None if project_id in unknown else 1000 + index
        project_list.append(builder.project(index, project_id, service_id, servers_per_project))
        if service_id is not None:
            billing.append(BillingService(service_id, rng.choice(clients).id, project_id))
    server_ids = [server.id for server in builder.servers]
    with_fip = _take(rng, server_ids, round(len(server_ids) * floating_ip_share))
    rest = [server_id for server_id in server_ids if server_id not in with_fip]
    with_fixed = _take(rng, rest, round(len(server_ids) * public_fixed_share))
    builder.expose(with_fip, with_fixed, dual_stack=round(len(with_fixed) * ipv6_share))
    for _ in range(unassociated_floating_ips):
        builder.floating_ip(rng.choice(project_ids), None)
    exposed = with_fip | with_fixed
    public = [server_id for server_id in server_ids if server_id in exposed]
    chosen = tuple(load_catalog().ports if services is None else services)
    builder.open(_take(rng, public, round(len(public) * open_share)), chosen)
    if exceptions_until is not None:
        builder.declare_exceptions(exceptions_until, owned=set(project_ids) - set(unknown))
    add_firewalls(seed, builder.groups, builder.ports, builder.servers, public)
    return World(
        seed=seed,
        admin_project_id=builder.admin_project,
        projects=tuple(project_list),
        clients=tuple(clients),
        services=tuple(billing),
        networks=tuple(builder.networks),
        ports=tuple(builder.ports.values()),
        servers=tuple(builder.servers),
        floating_ips=tuple(builder.floating_ips),
        security_groups=tuple(builder.groups),
    )


def move_floating_ip(world: World, address: IPv4Address, server_id: str) -> World:
    """The floating IP `address`, released and allocated again by `server_id`'s project.

    Neutron never changes a floating IP's project: moving one means a new floating IP object
    (new id) with the same address, in the new project, on the new server's first port.
    """
    server = next(s for s in world.servers if s.id == server_id)
    port = next(p for p in world.ports if p.id == server.port_ids[0])
    rng = random.Random(f"{world.seed}/{address}/{server_id}")
    fips = []
    for fip in world.floating_ips:
        if fip.address == address:
            fip = dataclasses.replace(
                fip,
                id=_uuid(rng),
                project_id=server.project_id,
                port_id=port.id,
                fixed_address=port.address,
            )
        fips.append(fip)
    return dataclasses.replace(world, floating_ips=tuple(fips))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _take(rng: random.Random, items: Sequence[str], count: int) -> set[str]:
    return set(rng.sample(list(items), max(0, min(len(items), count))))


def _next(hosts: Iterator[IPv4Address], what: str) -> IPv4Address:
    try:
        return next(hosts)
    except StopIteration:
        raise ValueError(f"address_base is too small for this many {what}") from None


class _Builder:
    """Draws the world in a fixed order, so that one seed always gives the same world."""

    def __init__(self, rng: random.Random, base: IPv4Network, base6: IPv6Network) -> None:
        floating_pool, fixed_pool, private_pool, _ = base.subnets(prefixlen_diff=2)
        self.rng = rng
        self.admin_project = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        self.networks: list[Network] = []
        self.ports: dict[str, Port] = {}
        self.groups: list[SecurityGroup] = []
        self.servers: list[Server] = []
        self.floating_ips: list[FloatingIp] = []
        self.floating_net = self._network("public", self.admin_project, True, floating_pool)
        fixed_net = self._network("public-direct", self.admin_project, True, fixed_pool)
        self.fixed_net = dataclasses.replace(
            fixed_net, subnet6_id=str(uuid.uuid5(_IPV6_SUBNET_IDS, fixed_net.id)), cidr6=base6
        )
        self.networks[-1] = self.fixed_net
        self.fixed6_hosts = base6.hosts()
        self.floating_hosts = floating_pool.hosts()
        self.fixed_hosts = fixed_pool.hosts()
        # Tenant networks overlap once there are many, as in real clouds: they are never targets.
        self.tenant_cidrs = list(private_pool.subnets(new_prefix=24))

    def client(self, number: int) -> Client:
        first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
        company = f"{self.rng.choice(_WORDS).title()} & {last} Ltd"  # '&' exercises escaping
        email = f"{first.lower()}.{last.lower()}{number}@customer{number}.example"
        return Client(number, first, last, company, email)

    def project(self, index: int, project_id: str, service_id: int | None, servers: int) -> Project:
        rng = self.rng
        name = f"{rng.choice(_WORDS)}-{rng.choice(('prod', 'stage', 'dev'))}-{index}"
        cidr = self.tenant_cidrs[index % len(self.tenant_cidrs)]
        net = self._network(f"{name}-net", project_id, False, cidr)
        default = self._default_group(project_id)
        hosts = cidr.hosts()
        self._port(net, project_id, _uuid(rng), "network:dhcp", next(hosts))
        router = _uuid(rng)
        self._port(net, project_id, router, "network:router_interface", next(hosts))
        gateway = _next(self.floating_hosts, "routers")
        self._port(self.floating_net, "", router, "network:router_gateway", gateway)
        for number in range(1, servers + 1):
            server_id = _uuid(rng)
            address = next(hosts)
            port = self._port(net, project_id, server_id, "compute:nova", address, (default.id,))
            created = _EPOCH + timedelta(minutes=rng.randrange(500_000))
            server_name = f"{rng.choice(_ROLES)}-{number}"
            self.servers.append(Server(server_id, server_name, project_id, created, (port.id,)))
        return Project(project_id, name, 500 + index, service_id)

    def expose(self, with_fip: set[str], with_fixed: set[str], *, dual_stack: int = 0) -> None:
        for index, server in enumerate(self.servers):
            if server.id in with_fip:
                self.floating_ip(server.project_id, self.ports[server.port_ids[0]])
            if server.id in with_fixed:
                address = _next(self.fixed_hosts, "public fixed IPs")
                port = self._port(
                    self.fixed_net,
                    server.project_id,
                    server.id,
                    "compute:nova",
                    address,
                    self.ports[server.port_ids[0]].security_group_ids,
                )
                if dual_stack > 0:  # the first ones: no draw, so the rest of the world stays
                    dual_stack -= 1
                    port = dataclasses.replace(port, address6=next(self.fixed6_hosts))
                    self.ports[port.id] = port
                self.servers[index] = dataclasses.replace(
                    server, port_ids=(*server.port_ids, port.id)
                )

    def floating_ip(self, project_id: str, port: Port | None) -> None:
        fip_id = _uuid(self.rng)
        address = _next(self.floating_hosts, "floating IPs")
        self._port(self.floating_net, "", fip_id, "network:floatingip", address)
        self.floating_ips.append(
            FloatingIp(
                fip_id,
                address,
                project_id,
                self.floating_net.id,
                port.id if port else None,
                port.address if port else None,
            )
        )

    def open(self, opened: set[str], services: tuple[PortSpec, ...]) -> None:
        """Give the chosen servers open services, and the security group that lets them out."""
        for index, server in enumerate(self.servers):
            if server.id not in opened or not services:
                continue
            count = min(len(services), self.rng.choice((1, 1, 2)))
            chosen = tuple(sorted(self.rng.sample(services, count)))
            self.servers[index] = dataclasses.replace(server, services=chosen)
            group = self._open_group(server.project_id, chosen)
            self.groups.append(group)
            for port_id in server.port_ids:
                port = self.ports[port_id]
                self.ports[port_id] = dataclasses.replace(
                    port, security_group_ids=(*port.security_group_ids, group.id)
                )

    def declare_exceptions(self, until: date, *, owned: set[str]) -> None:
        """One owned open server accepts 53/udp (and leaves Redis open), one says nonsense."""
        candidates = [
            index
            for index, server in enumerate(self.servers)
            if server.services and server.project_id in owned
        ]
        if len(candidates) < 2:
            raise ValueError("exceptions_until needs two owned servers with open services")
        catalog = {(p.port, p.protocol): p for p in load_catalog().ports}
        dns, redis = catalog[(53, Transport.UDP)], catalog[(6379, Transport.TCP)]
        accepting, unreadable = (self.servers[i] for i in candidates[:2])
        self.servers[candidates[0]] = dataclasses.replace(
            accepting,
            services=tuple(sorted({*accepting.services, dns, redis})),
            metadata=((ALLOW_KEY, f"53/udp;until={until.isoformat()};reason={DNS_REASON}"),),
        )
        group = self._open_group(accepting.project_id, (dns, redis))
        self.groups.append(group)
        for port_id in accepting.port_ids:
            port = self.ports[port_id]
            self.ports[port_id] = dataclasses.replace(
                port, security_group_ids=(*port.security_group_ids, group.id)
            )
        self.servers[candidates[1]] = dataclasses.replace(
            unreadable, metadata=((ALLOW_KEY, UNREADABLE_ALLOW),)
        )

    def _network(self, name: str, project_id: str, external: bool, cidr: IPv4Network) -> Network:
        net = Network(_uuid(self.rng), name, project_id, external, _uuid(self.rng), cidr)
        self.networks.append(net)
        return net

    def _port(
        self,
        net: Network,
        project_id: str,
        device_id: str,
        device_owner: str,
        address: IPv4Address,
        groups: tuple[str, ...] = (),
    ) -> Port:
        mac = "fa:16:3e:" + ":".join(f"{self.rng.randrange(256):02x}" for _ in range(3))
        port = Port(
            _uuid(self.rng), net.id, project_id, device_id, device_owner, mac, address, groups
        )
        self.ports[port.id] = port
        return port

    def _default_group(self, project_id: str) -> SecurityGroup:
        group_id = _uuid(self.rng)
        rules = (
            SecurityGroupRule(_uuid(self.rng), "ingress", None, None, None, None, group_id),
            SecurityGroupRule(_uuid(self.rng), "egress", None, None, None, None, None),
        )
        group = SecurityGroup(group_id, "default", project_id, rules)
        self.groups.append(group)
        return group

    def _open_group(self, project_id: str, specs: tuple[PortSpec, ...]) -> SecurityGroup:
        rules = tuple(
            SecurityGroupRule(
                _uuid(self.rng), "ingress", str(s.protocol), s.port, s.port, "0.0.0.0/0", None
            )
            for s in specs
        )
        return SecurityGroup(
            _uuid(self.rng), "allow-" + "-".join(s.service for s in specs), project_id, rules
        )
