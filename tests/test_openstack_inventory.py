"""The OpenStack side of the inventory, through the real openstacksdk against the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from goalkeeper.config import OpenStackSettings
from goalkeeper.firewall import PortFirewall, SecurityGroup, SecurityGroupRule
from goalkeeper.inventory.openstack import Json, OpenStackError, OpenStackInventory, next_page
from goalkeeper.inventory.openstack_targets import (
    FloatingIpRecord,
    Listings,
    PortRecord,
    ServerRecord,
    build_targets,
)
from goalkeeper.model import IPAddress
from goalkeeper_sim.cloud import SimulatedCloud
from goalkeeper_sim.faults import STALL
from goalkeeper_sim.world import Port, World, build_world
from tests.openstack_env import use_os_environment

LISTINGS = (
    "/compute/v2.1/servers/detail",
    "/network/v2.0/ports",
    "/network/v2.0/floatingips",
)


@pytest.fixture
def world() -> World:
    return build_world(21, projects=5, servers_per_project=6, unknown_project_share=0.2)


@pytest.fixture
async def cloud(world: World) -> AsyncIterator[SimulatedCloud]:
    async with SimulatedCloud(world, page_size=4, listeners=False) as sim:
        yield sim


def _expected(world: World) -> dict[IPAddress, tuple[str, str, str, str]]:
    names = {p.id: p.name for p in world.projects}
    return {
        address: (server.name, server.id, server.project_id, names[server.project_id])
        for address, server in world.inventory_addresses().items()
    }


async def test_targets_are_every_public_address_across_several_pages(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    targets = await inventory.targets()
    found = {t.address: (t.server_name, t.server_id, t.project_id, t.project_name) for t in targets}
    assert found == _expected(world)
    assert all(not t.owner.known for t in targets)  # owners come from billing, not from here
    for path in LISTINGS:  # every listing took several pages at 4 per page
        assert cloud.openstack.requests[path] > 2, path
    inventory.close()


async def test_neutrons_own_ports_on_external_networks_are_not_kept(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    listings = await asyncio.to_thread(inventory.read_listings)
    external = {n.id for n in world.networks if n.external}
    on_external = [p for p in world.ports if p.network_id in external]
    neutrons = {p.id for p in on_external if p.device_owner.startswith("network:")}
    assert neutrons  # router gateways and floating IP ports: read, then dropped
    assert neutrons.isdisjoint(listings.ports)
    servers = {p.id for p in on_external if p.device_owner.startswith("compute:")}
    assert servers and servers <= listings.ports.keys()  # public fixed IPs: kept
    assert {t.address for t in build_targets(listings)} == set(world.inventory_addresses())
    inventory.close()


async def test_servers_without_a_public_address_are_not_targets(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    targets = await OpenStackInventory(OpenStackSettings(api_timeout=10)).targets()
    public_servers = {t.server_id for t in targets}
    hidden = [s for s in world.servers if s.id not in public_servers]
    assert hidden  # 30 servers, 60 % floating + 20 % fixed: six have no public address
    private = {p.address for p in world.ports if p.device_id in {s.id for s in hidden}}
    assert private.isdisjoint(t.address for t in targets)


async def test_ipv6_fixed_ips_of_external_ports_are_targets(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    v6 = world.public_ipv6_addresses()
    assert v6, "the simulated world has dual-stack ports"
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    targets = {t.address: t for t in await inventory.targets()}
    inventory.close()
    assert {a for a in targets if a.version == 6} == set(v6)
    for address, server in v6.items():
        assert (targets[address].server_id, targets[address].server_name) == (
            server.id,
            server.name,
        )


async def test_application_credential_from_clouds_yaml(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, {}, tmp_path)
    cloud.write_clouds_yaml(tmp_path / "clouds.yaml", cloud="prod-sim", application_credential=True)
    inventory = OpenStackInventory(OpenStackSettings(cloud="prod-sim", api_timeout=10))
    targets = await inventory.targets()
    assert {t.address for t in targets} == set(world.inventory_addresses())
    inventory.close()


async def test_a_wrong_password_is_a_clear_error_without_the_password(
    cloud: SimulatedCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = "Wr0ng-" + cloud.openstack.password
    use_os_environment(monkeypatch, cloud.os_env() | {"OS_PASSWORD": wrong}, tmp_path)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    with pytest.raises(OpenStackError) as caught:
        await inventory.targets()
    message = str(caught.value)
    assert "authentication refused (HTTP 401)" in message
    assert "OS_* variables" in message
    assert wrong not in message
    assert cloud.openstack.password not in message


async def test_a_failing_listing_is_named_and_the_next_read_reconnects(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    cloud.openstack.faults["/network/v2.0/floatingips"] = 500
    with pytest.raises(OpenStackError, match=r"while listing Neutron floating IPs: .*500"):
        await inventory.targets()
    del cloud.openstack.faults["/network/v2.0/floatingips"]
    tokens_before = cloud.openstack.requests["/identity/v3/auth/tokens"]
    assert {t.address for t in await inventory.targets()} == set(world.inventory_addresses())
    assert cloud.openstack.requests["/identity/v3/auth/tokens"] == tokens_before + 1
    inventory.close()


async def test_every_port_is_listed_once_with_or_without_port_details(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    with_details = await inventory.targets()
    ports_with_details = cloud.openstack.requests["/network/v2.0/ports"]
    cloud.openstack.fip_port_details = False  # an older Neutron, or the extension turned off
    cloud.openstack.load(world)
    assert await inventory.targets() == with_details
    without_details = cloud.openstack.requests["/network/v2.0/ports"] - ports_with_details
    # Every port (a floating IP's port names its security groups), in pages of 4, once: the
    # listing already holds every port a floating IP without port_details may name.
    assert ports_with_details == without_details == len(world.ports) // 4 + 1
    inventory.close()


async def test_api_timeout_bounds_every_call(
    cloud: SimulatedCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    cloud.openstack.faults["/network/v2.0/networks"] = STALL
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=0.5))
    with pytest.raises(
        OpenStackError, match=r"while listing external Neutron networks: .*timed out"
    ):
        await inventory.targets()
    inventory.close()


async def test_the_listings_are_read_side_by_side(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    cloud.openstack.faults["/compute/v2.1/servers/detail"] = STALL
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=0.5))
    with pytest.raises(OpenStackError, match=r"while listing Nova servers: .*timed out"):
        await inventory.targets()
    # While Nova hung, Keystone and Neutron were read to the end: read one after another,
    # nothing would have been asked of Neutron before Nova answered.
    requests = cloud.openstack.requests
    assert requests["/identity/v3/projects"] == 1  # Keystone lists every project at once
    assert requests["/network/v2.0/floatingips"] == len(world.floating_ips) // 4 + 1
    assert requests["/network/v2.0/ports"] > 0
    inventory.close()


async def test_the_addresses_are_announced_before_nova_is_read(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    announced: list[frozenset[IPAddress]] = []
    targets = await inventory.targets(announced.append)
    assert announced == [frozenset(t.address for t in targets)]
    assert announced[0] == set(world.inventory_addresses())

    # With Nova hung, the addresses are still known: a scan can start on them meanwhile.
    announced.clear()
    cloud.openstack.faults["/compute/v2.1/servers/detail"] = STALL
    stalled = OpenStackInventory(OpenStackSettings(api_timeout=0.5))
    with pytest.raises(OpenStackError, match="while listing Nova servers"):
        await stalled.targets(announced.append)
    assert announced == [set(world.inventory_addresses())]
    inventory.close()
    stalled.close()


async def test_an_expired_token_is_replaced_between_refreshes(
    cloud: SimulatedCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    # keystoneauth renews a token that has less than two minutes left before using it.
    cloud.openstack.token_ttl = timedelta(seconds=30)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    first = await inventory.targets()
    tokens = cloud.openstack.requests["/identity/v3/auth/tokens"]
    assert await inventory.targets() == first
    assert cloud.openstack.requests["/identity/v3/auth/tokens"] > tokens
    inventory.close()


async def test_a_listing_that_pages_endlessly_is_an_error(
    cloud: SimulatedCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    cloud.openstack.ignore_marker.add("/network/v2.0/floatingips")
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    with pytest.raises(OpenStackError, match=r"floating IPs: ValueError: .* pages endlessly"):
        await inventory.targets()
    # The first page, then the same page again under its own marker: stopped there.
    assert cloud.openstack.requests["/network/v2.0/floatingips"] == 2
    inventory.close()


async def test_a_project_listing_cut_short_is_said_and_the_rest_still_read(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    cloud.openstack.list_limit = 3  # the admin project and the first two customers
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    with capture_logs() as logs:
        targets = await inventory.targets()
    assert {t.address for t in targets} == set(world.inventory_addresses())
    warning = next(e for e in logs if e["event"] == "openstack cut a listing short")
    assert (warning["path"], warning["items"], warning["log_level"]) == (
        "/identity/v3/projects",
        3,
        "warning",
    )
    names = {t.project_name for t in targets}
    assert "" in names  # a project that was cut off has no name, but its servers are there
    assert names - {""} <= {p.name for p in world.projects[:2]}
    inventory.close()


_NOVA = "http://127.0.0.1:5000/compute/v2.1/servers/detail"
_PORTS = "http://127.0.0.1:5000/network/v2.0/ports"
_PROJECTS = "http://127.0.0.1:5000/identity/v3/projects"


@pytest.mark.parametrize(
    ("body", "key", "header", "expected"),
    [
        pytest.param(
            {"servers_links": [{"rel": "next", "href": f"{_NOVA}?all_tenants=True&marker=s4"}]},
            "servers",
            {},
            (_NOVA, {"all_tenants": ["True"], "marker": ["s4"]}),
            id="nova",
        ),
        pytest.param(
            {
                "ports_links": [
                    {"rel": "previous", "href": f"{_PORTS}?marker=p5&page_reverse=True"},
                    {"rel": "next", "href": f"{_PORTS}?network_id=a&network_id=b&marker=p8"},
                ]
            },
            "ports",
            {},
            (_PORTS, {"network_id": ["a", "b"], "marker": ["p8"]}),
            id="neutron-repeated-filter",
        ),
        pytest.param(
            {"ports_links": [{"rel": "previous", "href": f"{_PORTS}?marker=p5"}]},
            "ports",
            {},
            (None, {}),
            id="neutron-last-page",
        ),
        pytest.param(
            {"links": {"self": _PROJECTS, "previous": None, "next": f"{_PROJECTS}?marker=x"}},
            "projects",
            {},
            (_PROJECTS, {"marker": ["x"]}),
            id="keystone",
        ),
        pytest.param(
            {"links": {"self": _PROJECTS, "previous": None, "next": None}},
            "projects",
            {},
            (None, {}),
            id="keystone-last-page",
        ),
        pytest.param(
            {"ports_links": [{"rel": "next", "href": "/v2.0/ports?marker=p8"}]},
            "ports",
            {},
            ("/ports", {"marker": ["p8"]}),
            id="relative-to-the-endpoint",
        ),
        pytest.param(
            {},
            "ports",
            {"next": {"url": f"{_PORTS}?marker=p8", "rel": "next"}},
            (_PORTS, {"marker": ["p8"]}),
            id="link-header",
        ),
        pytest.param({}, "servers", {}, (None, {}), id="no-links"),
    ],
)
def test_the_next_page_is_found_where_each_service_puts_it(
    body: Json,
    key: str,
    header: dict[str, dict[str, str]],
    expected: tuple[str | None, dict[str, list[str]]],
) -> None:
    assert next_page(body, key, header) == expected


def _listings(
    ports: list[PortRecord], fips: list[FloatingIpRecord], servers: list[ServerRecord]
) -> Listings:
    return Listings(
        projects={"p1": "acme", "p2": "globex"},
        servers={s.id: s for s in servers},
        external_networks=frozenset({"ext"}),
        ports={p.id: p for p in ports},
        floating_ips=tuple(fips),
    )


def test_build_targets_follows_floating_ips_and_external_ports() -> None:
    web = ServerRecord("s1", "web-1", "p1")
    db = ServerRecord("s2", "db-1", "p2")
    ports = [
        PortRecord("port-web", "private", "s1", "compute:nova", ("10.0.0.5",)),
        PortRecord("port-db", "ext", "s2", "compute:nova", ("127.64.9.9", "fd00::9")),
        PortRecord("port-router", "ext", "r1", "network:router_gateway", ("127.64.9.1",)),
        PortRecord("port-lb", "private", "lb1", "Octavia", ("10.0.0.9",)),
        PortRecord("port-bm", "ext", "node-7", "baremetal:none", ("127.64.9.7",), "p1"),
        PortRecord("port-free", "ext", "", "", ("127.64.9.8",), "p2"),  # attached to nothing
    ]
    fips = [
        FloatingIpRecord("127.64.1.1", "port-web", "p1"),
        FloatingIpRecord("127.64.1.2", None, "p1"),  # allocated, attached to nothing
        FloatingIpRecord("127.64.1.3", "port-gone", "p1"),  # its port vanished meanwhile
        FloatingIpRecord("127.64.1.4", "port-lb", "p2"),  # a load balancer is exposed too
    ]
    targets = {str(t.address): t for t in build_targets(_listings(ports, fips, [web, db]))}
    # The IPv6 address is a target too (counted not scanned by the tick), never dropped here.
    assert list(targets) == ["127.64.1.1", "127.64.1.4", "127.64.9.7", "127.64.9.9", "fd00::9"]
    rows = {
        a: (t.server_name, t.server_id, t.project_id, t.project_name) for a, t in targets.items()
    }
    assert rows["127.64.1.1"] == ("web-1", "s1", "p1", "acme")
    assert rows["127.64.9.9"] == rows["fd00::9"] == ("db-1", "s2", "p2", "globex")
    assert rows["127.64.1.4"] == ("(Octavia)", "lb1", "p2", "globex")
    # a device on an external network that is not a server (bare metal): exposed all the same
    assert rows["127.64.9.7"] == ("(baremetal:none)", "node-7", "p1", "acme")
    # Which addresses are targets does not depend on Nova: servers only name them.
    without_nova = build_targets(_listings(ports, fips, []))
    assert {str(t.address) for t in without_nova} == set(targets)


def _firewalls(world: World) -> dict[IPAddress, PortFirewall]:
    """What each public address's port lets in, written straight from the world."""
    groups = {
        g.id: SecurityGroup(
            g.id,
            g.name,
            tuple(
                SecurityGroupRule(
                    r.id,
                    g.id,
                    r.direction,
                    r.ethertype,
                    r.protocol,
                    r.port_min,
                    r.port_max,
                    r.remote_ip_prefix,
                    r.remote_group_id,
                )
                for r in g.rules
            ),
        )
        for g in world.security_groups
    }
    ports = {p.id: p for p in world.ports}

    def firewall(port: Port) -> PortFirewall:
        named = tuple(groups[g] for g in port.security_group_ids)
        return PortFirewall(port.id, port.port_security_enabled, named)

    external = {n.id for n in world.networks if n.external}
    found: dict[IPAddress, PortFirewall] = {
        fip.address: firewall(ports[fip.port_id]) for fip in world.floating_ips if fip.port_id
    }
    for port in world.ports:
        if port.network_id in external and port.device_owner.startswith("compute:"):
            found[port.address] = firewall(port)
            if port.address6 is not None:
                found[port.address6] = firewall(port)
    return found


async def test_targets_carry_their_ports_security_groups_and_rules_as_neutron_lists_them(
    cloud: SimulatedCloud, world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_os_environment(monkeypatch, cloud.os_env(), tmp_path)
    inventory = OpenStackInventory(OpenStackSettings(api_timeout=10))
    targets = await inventory.targets()
    expected = _firewalls(world)
    assert {t.address: t.firewall for t in targets} == {
        t.address: expected[t.address] for t in targets
    }
    firewalls = [t.firewall for t in targets if t.firewall is not None]
    assert len(firewalls) == len(targets)
    # Every case root-cause tracing tells apart is in what was read: port security off, a rule
    # open to the world, a range, a protocol-any rule for IPv6, a default group's member rule.
    assert any(not f.port_security_enabled for f in firewalls)
    rules = [r for f in firewalls for g in f.groups for r in g.rules]
    assert any(r.remote_ip_prefix == "0.0.0.0/0" and r.protocol == "tcp" for r in rules)
    assert any(r.port_range_min != r.port_range_max for r in rules if r.port_range_min)
    assert any(r.ethertype == "IPv6" and r.protocol is None and r.remote_ip_prefix == "::/0"
               for r in rules)  # fmt: skip
    assert any(r.remote_group_id == r.security_group_id for r in rules)
    # ...and the latent exposure: a group opening 27017/tcp to the world where nothing listens.
    latent = [g for f in firewalls for g in f.groups if g.name == "legacy-mongodb"]
    assert latent and latent[0].rules[0].port_range_min == 27017
    # Paged in bulk: one request per page of 4 groups, whatever the number of ports.
    pages = len(world.security_groups) // 4 + 1
    assert cloud.openstack.requests["/network/v2.0/security-groups"] == pages
    assert "/network/v2.0/security-group-rules" not in cloud.openstack.requests
    inventory.close()


def test_build_targets_joins_each_port_to_its_firewall() -> None:
    web_rule = SecurityGroupRule("r1", "g-web", "ingress", "IPv4", "tcp", 80, 80, "0.0.0.0/0")
    web = SecurityGroup("g-web", "web", (web_rule,))
    default = SecurityGroup("g-def", "default")
    groups = {"g-web": web, "g-def": default}
    ports = [
        PortRecord("p-a", "private", "s1", "compute:nova", ("10.0.0.5",), "p1", ("g-def", "g-web")),
        PortRecord("p-b", "ext", "s1", "compute:nova", ("127.64.9.9",), "p1", ("g-def", "g-web")),
        PortRecord("p-off", "ext", "s1", "compute:nova", ("127.64.9.8",), "p1", (), False),
        PortRecord("p-new", "ext", "s1", "compute:nova", ("127.64.9.7",), "p1", ("g-made-since",)),
        PortRecord("p-details", "private", "s1", "compute:nova", ("10.0.0.6",)),  # groups unread
    ]
    fips = [
        FloatingIpRecord("127.64.1.1", "p-a", "p1"),
        FloatingIpRecord("127.64.1.2", "p-details", "p1"),
    ]
    listings = Listings(
        projects={"p1": "acme"},
        servers={"s1": ServerRecord("s1", "web-1", "p1")},
        external_networks=frozenset({"ext"}),
        ports={p.id: p for p in ports},
        floating_ips=tuple(fips),
        security_groups=groups,
    )
    with capture_logs() as logs:
        found = {str(t.address): t.firewall for t in build_targets(listings)}
    assert found == {
        "127.64.1.1": PortFirewall("p-a", True, (default, web)),  # a floating IP: its own port
        "127.64.1.2": None,  # only port_details were read: no groups known
        "127.64.9.7": None,  # names a group the listing lacks: unknown, not a partial firewall
        "127.64.9.8": PortFirewall("p-off", False, ()),
        "127.64.9.9": PortFirewall("p-b", True, (default, web)),
    }
    assert found["127.64.1.1"].groups is found["127.64.9.9"].groups  # type: ignore[union-attr]
    assert [e["count"] for e in logs if "security group" in e["event"]] == [1]
