"""The simulated cloud: a pure, seeded world, and fakes that speak the documented wire shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import aiohttp
import pytest

from goalkeeper.model import Transport
from goalkeeper_sim import openstack_json
from goalkeeper_sim import world as world_module
from goalkeeper_sim.cloud import SimulatedCloud
from goalkeeper_sim.world import (
    DEFAULT_ADDRESS_BASE,
    DEFAULT_IPV6_BASE,
    build_world,
    move_floating_ip,
)


def test_one_seed_gives_one_world() -> None:
    assert build_world(7) == build_world(7)
    assert build_world(7) != build_world(8)


def test_sizes_and_shares_are_exact() -> None:
    world = build_world(3, projects=10, servers_per_project=5, unassociated_floating_ips=2)
    external = {n.id for n in world.networks if n.external}
    with_fixed = {
        p.device_id
        for p in world.ports
        if p.network_id in external and p.device_owner == "compute:nova"
    }
    assert len(world.servers) == 50
    assert len([f for f in world.floating_ips if f.port_id]) == 30  # floating_ip_share 0.6
    assert len([f for f in world.floating_ips if not f.port_id]) == 2
    assert len(with_fixed) == 10  # public_fixed_share 0.2
    assert len([p for p in world.projects if p.service_id is None]) == 1  # unknown share 0.1
    assert len([s for s in world.servers if s.services]) == 12  # open_share 0.3 of 40 public
    assert len(world.public_addresses()) == 40


def test_half_the_public_fixed_ports_are_dual_stack_as_neutron_lists_them() -> None:
    world = build_world(3, projects=10, servers_per_project=5)
    v6 = world.public_ipv6_addresses()
    assert len(v6) == 5  # ipv6_share 0.5 of the 10 public fixed ports
    assert all(a in IPv6Network(DEFAULT_IPV6_BASE) for a in v6)
    assert world.inventory_addresses().keys() == world.public_addresses().keys() | v6.keys()
    assert {a for a, _, _ in world.exposed()} <= set(world.public_addresses())  # IPv4 only
    networks = {n.id: n for n in world.networks}
    port = next(p for p in world.ports if p.address6 is not None)
    net = networks[port.network_id]
    body = openstack_json.port(port, networks)
    # Neutron's port: one fixed_ips entry per address, each with the subnet it came from.
    assert body["fixed_ips"] == [
        {"subnet_id": net.subnet_id, "ip_address": str(port.address)},
        {"subnet_id": net.subnet6_id, "ip_address": str(port.address6)},
    ]
    assert openstack_json.network(net)["subnets"] == [net.subnet_id, net.subnet6_id]
    with pytest.raises(ValueError, match=r"outside fd00::/8"):
        build_world(5, ipv6_base="2001:db8::/64")


def test_every_address_is_on_loopback_inside_the_base() -> None:
    world = build_world(5, projects=30, servers_per_project=8)
    base = IPv4Network(DEFAULT_ADDRESS_BASE)
    addresses = [p.address for p in world.ports] + [f.address for f in world.floating_ips]
    assert addresses
    assert all(address in base for address in addresses)
    assert not base.overlaps(IPv4Network("127.42.0.0/16"))
    assert not base.overlaps(IPv4Network("127.0.0.0/16"))
    with pytest.raises(ValueError, match=r"outside 127\.0\.0\.0/8"):
        build_world(5, address_base="10.0.0.0/14")


def test_exposed_ports_are_the_open_services_on_public_addresses() -> None:
    world = build_world(11, projects=6, servers_per_project=6, open_share=0.5)
    public = world.public_addresses()
    exposed = world.exposed()
    assert exposed
    for address, port, transport in exposed:
        assert any(s.port == port and s.protocol is transport for s in public[address].services)
    private = {p.address for p in world.ports if p.device_owner == "compute:nova"} - set(public)
    assert private.isdisjoint(address for address, _, _ in exposed)


def test_a_moved_floating_ip_is_a_new_object_in_the_new_project() -> None:
    world = build_world(2, projects=4, servers_per_project=3)
    fip = next(f for f in world.floating_ips if f.port_id)
    old_server = world.public_addresses()[fip.address]
    new_server = next(s for s in world.servers if s.project_id != old_server.project_id)
    moved = move_floating_ip(world, fip.address, new_server.id)
    after = next(f for f in moved.floating_ips if f.address == fip.address)
    assert after.id != fip.id
    assert after.project_id == new_server.project_id
    assert moved.public_addresses()[fip.address] == new_server


@pytest.fixture
async def cloud() -> AsyncIterator[SimulatedCloud]:
    async with SimulatedCloud(
        build_world(1, projects=4, servers_per_project=5, unknown_project_share=0.25),
        page_size=4,
        listeners=False,
    ) as sim:
        yield sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _token(
    cloud: SimulatedCloud, http: aiohttp.ClientSession, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    async with http.post(f"{cloud.auth_url}/v3/auth/tokens", json={"auth": body}) as response:
        await response.read()
        return response


def _password(cloud: SimulatedCloud, password: str) -> dict[str, Any]:
    user = {"name": cloud.openstack.username, "domain": {"name": "Default"}, "password": password}
    return {"identity": {"methods": ["password"], "password": {"user": user}}}


async def test_keystone_discovery_and_tokens(
    cloud: SimulatedCloud, http: aiohttp.ClientSession
) -> None:
    async with http.get(cloud.auth_url) as response:
        versions = await response.json()
    assert response.status == 300
    assert versions["versions"]["values"][0]["id"].startswith("v3")
    ok = await _token(cloud, http, _password(cloud, cloud.openstack.password))
    assert ok.status == 201
    assert ok.headers["X-Subject-Token"]
    token = (await ok.json())["token"]
    assert token["expires_at"].endswith("Z")
    assert {entry["type"] for entry in token["catalog"]} == {"identity", "compute", "network"}
    wrong = await _token(cloud, http, _password(cloud, "not-the-password"))
    assert wrong.status == 401
    credential = {
        "id": cloud.openstack.application_credential_id,
        "secret": cloud.openstack.application_credential_secret,
    }
    app = await _token(
        cloud,
        http,
        {"identity": {"methods": ["application_credential"], "application_credential": credential}},
    )
    assert app.status == 201
    assert (await app.json())["token"]["methods"] == ["application_credential"]


async def _login(cloud: SimulatedCloud, http: aiohttp.ClientSession) -> dict[str, str]:
    response = await _token(cloud, http, _password(cloud, cloud.openstack.password))
    return {"X-Auth-Token": response.headers["X-Subject-Token"]}


def _compute(cloud: SimulatedCloud) -> str:
    return cloud.auth_url.replace("/identity", "/compute/v2.1")


async def test_unknown_tokens_are_refused(
    cloud: SimulatedCloud, http: aiohttp.ClientSession
) -> None:
    network = cloud.auth_url.replace("/identity", "/network/v2.0/ports")
    for url in (f"{_compute(cloud)}/servers/detail", network, f"{cloud.auth_url}/v3/projects"):
        async with http.get(url, headers={"X-Auth-Token": "made-up"}) as response:
            assert response.status == 401, url
    async with http.get(
        f"{cloud.fleio_url}/clients", headers={"Authorization": "Token made-up"}
    ) as response:
        assert response.status == 401


async def test_nova_pages_by_limit_and_marker(
    cloud: SimulatedCloud, http: aiohttp.ClientSession
) -> None:
    headers = await _login(cloud, http) | {"OpenStack-API-Version": "compute 2.90"}
    url: str | None = f"{_compute(cloud)}/servers/detail?all_tenants=True"
    seen: list[str] = []
    while url:
        async with http.get(url, headers=headers) as response:
            assert response.headers["OpenStack-API-Version"] == "compute 2.90"
            body = await response.json()
        seen += [server["id"] for server in body["servers"]]
        url = next(
            (link["href"] for link in body.get("servers_links", []) if link["rel"] == "next"), None
        )
    assert sorted(seen) == sorted(s.id for s in cloud.world.servers)
    assert cloud.openstack.requests["/compute/v2.1/servers/detail"] == 6  # 20 by 4, then empty
    async with http.get(f"{_compute(cloud)}/servers/detail", headers=headers) as response:
        assert (await response.json())["servers"] == []  # without all_tenants: the admin's own
    too_new = headers | {"OpenStack-API-Version": "compute 2.999"}
    async with http.get(f"{_compute(cloud)}/servers/detail", headers=too_new) as response:
        assert response.status == 406


async def test_neutron_pages_and_filters(
    cloud: SimulatedCloud, http: aiohttp.ClientSession
) -> None:
    headers = await _login(cloud, http)
    base = cloud.auth_url.replace("/identity", "/network/v2.0")
    async with http.get(f"{base}/floatingips", headers=headers) as response:
        first = await response.json()
    assert len(first["floatingips"]) == 4
    link = first["floatingips_links"][0]
    assert link["rel"] == "next"
    assert "limit=4" in link["href"]
    assert f"marker={first['floatingips'][-1]['id']}" in link["href"]
    async with http.get(f"{base}/networks?router:external=True", headers=headers) as response:
        external = (await response.json())["networks"]
    assert {n["name"] for n in external} == {"public", "public-direct"}
    cloud.openstack.faults["/network/v2.0/ports"] = 500
    async with http.get(f"{base}/ports", headers=headers) as response:
        assert response.status == 500
        assert "NeutronError" in await response.json()


async def test_neutron_answers_only_the_fields_asked_for(
    cloud: SimulatedCloud, http: aiohttp.ClientSession
) -> None:
    headers = await _login(cloud, http)
    url = cloud.auth_url.replace("/identity", "/network/v2.0/ports")
    fields = [("fields", "device_id"), ("fields", "fixed_ips")]
    async with http.get(url, params=fields, headers=headers) as response:
        body = await response.json()
    ports = sorted(cloud.world.ports, key=lambda p: p.id)[:4]
    assert [set(p) for p in body["ports"]] == [{"device_id", "fixed_ips"}] * 4
    assert [p["device_id"] for p in body["ports"]] == [p.device_id for p in ports]
    # As in Neutron, the page is cut from whole items: the marker is the last id, not asked for.
    link = body["ports_links"][0]["href"]
    assert f"marker={ports[-1].id}" in link
    assert "fields=device_id&fields=fixed_ips" in link


async def test_fleio_envelope_paging_and_404(
    cloud: SimulatedCloud, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Token {cloud.fleio_token}"}
    url = f"{cloud.fleio_url}/openstack/projects"
    async with http.get(url, params={"page": "1", "page_size": "2"}, headers=headers) as response:
        body = await response.json()
    assert set(body) == {"count", "next", "previous", "objects", "totalCount", "pageNo"}
    assert body["count"] == body["totalCount"] == 3  # one of four projects is unknown to billing
    assert body["pageNo"] == 1
    assert body["previous"] is None
    assert "page=2" in body["next"]
    async with http.get(url, params={"page": "2", "page_size": "2"}, headers=headers) as response:
        last = await response.json()
    assert last["next"] is None
    assert len(last["objects"]) == 1
    async with http.get(url, params={"page": "3", "page_size": "2"}, headers=headers) as response:
        assert response.status == 404
    async with http.get(url + "/", headers=headers) as response:
        assert response.status == 404  # no trailing slashes
    service = body["objects"][0]["service"]
    assert isinstance(service, int)  # a project's service is a bare id in Fleio
    async with http.get(
        f"{cloud.fleio_url}/billing/services/{service}", headers=headers
    ) as response:
        client = (await response.json())["client"]
    async with http.get(f"{cloud.fleio_url}/clients/{client['id']}", headers=headers) as response:
        assert "@" in (await response.json())["email"]


async def test_fleio_writes_the_nested_objects_its_serializers_write(
    cloud: SimulatedCloud, http: aiohttp.ClientSession
) -> None:
    # From Fleio's StaffServiceSerializer and StaffFloatingIpSerializer.
    headers = {"Authorization": f"Token {cloud.fleio_token}"}

    async def objects(path: str) -> list[dict[str, Any]]:
        async with http.get(f"{cloud.fleio_url}/{path}", headers=headers) as response:
            items: list[dict[str, Any]] = (await response.json())["objects"]
            return items

    services = await objects("billing/services")
    assert services
    for service in services:
        assert set(service["client"]) == {"id", "name", "external_billing_id"}
        assert isinstance(service["client"]["id"], int)
        assert set(service["product"]) == {"id", "name", "description"}
        assert set(service["cycle"]) == {"id", "display_name"}
    floating_ips = await objects("openstack/floatingips")
    assert floating_ips
    billed = {p.id for p in cloud.world.projects if p.service_id is not None}
    for fip in floating_ips:
        assert isinstance(fip["project"], str)  # the Keystone id
        if fip["project"] in billed:
            assert set(fip["client"]) == {"id", "name"}
        else:
            assert fip["client"] is None
        assert set(fip["floating_network"]) == {"id", "name", "region"}


async def test_listeners_play_the_open_ports() -> None:
    world = build_world(4, projects=2, servers_per_project=4, open_share=1.0)
    async with SimulatedCloud(world) as cloud:
        tcp = [(a, p) for a, p, t in cloud.world.exposed() if t is Transport.TCP]
        assert tcp
        address, port = tcp[0]
        _, writer = await asyncio.open_connection(str(address), port)
        writer.close()
        await writer.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(str(address), 1)


def test_the_firewall_data_covers_every_case_and_leaves_the_rest_of_the_world_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(7)
    groups = {g.id: g for g in world.security_groups}
    defaults = [g for g in world.security_groups if g.name == "default"]
    assert len(defaults) == len(world.projects)
    # Neutron's default group: ingress from its own members, egress anywhere, both families.
    shapes = {(r.direction, r.ethertype, r.remote_group_id, r.protocol) for r in defaults[0].rules}
    assert shapes == {
        ("ingress", "IPv4", defaults[0].id, None),
        ("ingress", "IPv6", defaults[0].id, None),
        ("egress", "IPv4", None, None),
        ("egress", "IPv6", None, None),
    }
    rules = [r for g in world.security_groups for r in g.rules if r.direction == "ingress"]
    assert any(r.protocol is None and r.remote_ip_prefix == "::/0" for r in rules)
    assert any(r.port_min is not None and r.port_min != r.port_max for r in rules)  # a range
    off = [p for p in world.ports if not p.port_security_enabled]
    assert off and all(p.security_group_ids == () for p in off)  # Neutron requires none then
    latent = [g for g in world.security_groups if g.name == "legacy-mongodb"]
    assert len(latent) == 1
    holder = next(s for s in world.servers if any(
        latent[0].id in p.security_group_ids for p in world.ports if p.id in s.port_ids
    ))  # fmt: skip
    assert all(spec.port != 27017 for spec in holder.services)  # nothing listens: latent
    assert holder in world.public_addresses().values()
    every_group_named = {g for p in world.ports for g in p.security_group_ids}
    assert every_group_named <= groups.keys()
    # The firewall has a generator of its own: the addresses and listeners a seed gives stay.
    monkeypatch.setattr(world_module, "add_firewalls", lambda *args: None)
    bare = build_world(7)
    assert bare.servers == world.servers
    assert bare.floating_ips == world.floating_ips
    assert bare.exposed() == world.exposed()
    assert [(p.id, p.address, p.mac) for p in bare.ports] == [
        (p.id, p.address, p.mac) for p in world.ports
    ]


async def test_neutron_lists_security_groups_with_their_rules_and_ports_their_groups(
    cloud: SimulatedCloud, http: aiohttp.ClientSession
) -> None:
    headers = await _login(cloud, http)
    base = cloud.auth_url.replace("/identity", "/network/v2.0")
    async with http.get(f"{base}/security-groups?limit=2", headers=headers) as response:
        body = await response.json()
    assert len(body["security_groups"]) == 2
    assert body["security_groups_links"][0]["rel"] == "next"
    group = body["security_groups"][0]
    assert {"id", "name", "project_id", "security_group_rules", "stateful"} <= set(group)
    rule = group["security_group_rules"][0]
    assert {
        "id", "security_group_id", "direction", "ethertype", "protocol", "port_range_min",
        "port_range_max", "remote_ip_prefix", "remote_group_id", "normalized_cidr",
    } <= set(rule)  # fmt: skip
    assert rule["security_group_id"] == group["id"]
    async with http.get(f"{base}/security-group-rules?limit=1000", headers=headers) as response:
        listed = (await response.json())["security_group_rules"]
    every = [r for g in cloud.world.security_groups for r in g.rules]
    assert len(listed) == min(len(every), cloud.openstack.page_size)
    assert {r["ethertype"] for r in openstack_json.render(
        cloud.world, admin_project_name="admin", fip_port_details=True
    )[2]["security-group-rules"]} == {"IPv4", "IPv6"}  # fmt: skip
    fields = [("fields", "id"), ("fields", "security_groups"), ("fields", "port_security_enabled")]
    async with http.get(f"{base}/ports", params=fields, headers=headers) as response:
        ports = (await response.json())["ports"]
    world_ports = {p.id: p for p in cloud.world.ports}
    for port in ports:
        assert port["security_groups"] == list(world_ports[port["id"]].security_group_ids)
        assert port["port_security_enabled"] is world_ports[port["id"]].port_security_enabled
