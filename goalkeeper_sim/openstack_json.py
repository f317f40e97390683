"""The JSON the fake OpenStack answers with, shaped after the OpenStack API reference.

Keystone's version documents, tokens and projects; Nova's version document and servers;
Neutron's ports, floating IPs, networks and security groups (with their rules); and the error
body each service writes. `openstack.py` beside it serves these; they live apart so that the server
stays about routing, auth and paging. Functions of the simulated world and their arguments
only: no HTTP, no state, no clock (times are arguments; only a token's audit id is random, as
Keystone's is). The daemon never imports this module.
Past 300 lines: one builder per API reference shape, each short.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from goalkeeper_sim.world import FloatingIp, Network, Port, Server, World
from goalkeeper_sim.world_firewalls import SecurityGroup, SecurityGroupRule

Json = dict[str, Any]
NOVA_MAX_VERSION = "2.96"
_STAMP = "2024-01-01T00:00:00Z"
ROUTER_INTERFACE = "network:router_interface"
UNAUTHORIZED: Json = {
    "error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
}


def render(
    world: World, *, admin_project_name: str, fip_port_details: bool
) -> tuple[list[Json], list[Json], dict[str, list[Json]]]:
    """Every listing of `world`: Nova's servers (newest first, as Nova lists them), Keystone's
    projects (the admin's first), and each Neutron collection (by id, Neutron's default sort).
    Without `fip_port_details`, floating IPs are those of a Neutron without that extension.
    """
    networks = {network.id: network for network in world.networks}
    ports = {port.id: port for port in world.ports}
    fip_by_port = {fip.port_id: fip for fip in world.floating_ips if fip.port_id}
    routers = {p.network_id: p.device_id for p in world.ports if p.device_owner == ROUTER_INTERFACE}
    newest_first = sorted(world.servers, key=lambda s: (s.created, s.id), reverse=True)
    servers = [server(s, ports, networks, fip_by_port) for s in newest_first]
    projects = [project(world.admin_project_id, admin_project_name)]
    projects += [project(p.id, p.name) for p in world.projects]
    fips = [floating_ip(f, ports.get(f.port_id or ""), routers) for f in world.floating_ips]
    if not fip_port_details:
        for fip in fips:
            del fip["port_details"]
    neutron = {
        "floatingips": fips,
        "ports": [port(p, networks) for p in world.ports],
        "networks": [network(n) for n in world.networks],
        "security-groups": [security_group(g) for g in world.security_groups],
        "security-group-rules": [
            security_group_rule(g, r) for g in world.security_groups for r in g.rules
        ],
    }
    for items in neutron.values():
        items.sort(key=lambda item: str(item["id"]))
    return servers, projects, neutron


def token(
    origin: str,
    *,
    methods: list[str],
    period: tuple[datetime, datetime],
    project: tuple[str, str],
    username: str,
    region: str,
    regions: Mapping[str, str] | None = None,
) -> Json:
    """A Keystone v3 token body, valid for `period`, with a catalog of every service on `origin`.

    `regions` (region name -> origin) adds other regions' Nova and Neutron: the Keystone v3 API
    reference's token `catalog` lists each service once with one endpoint per region and
    interface, so a client picks a region by its endpoints' `region`. Keystone is global: each
    region's identity endpoint is the one on `origin`.
    """
    domain = {"id": "default", "name": "Default"}
    where = {region: origin, **(regions or {})}
    catalog = [
        {
            "id": stable_id(kind),
            "type": kind,
            "name": name,
            "endpoints": [
                {
                    "id": stable_id(url + interface),
                    "interface": interface,
                    "region": name_of_region,
                    "region_id": name_of_region,
                    "url": url,
                }
                for name_of_region, base in where.items()
                for url in (f"{origin if kind == 'identity' else base}{path}",)
                for interface in ("public", "internal", "admin")
            ],
        }
        for kind, name, path in (
            ("identity", "keystone", "/identity"),
            ("compute", "nova", "/compute/v2.1"),
            ("network", "neutron", "/network"),
        )
    ]
    user = {"id": stable_id(username), "name": username, "domain": domain}
    return {
        "token": {
            "methods": methods,
            "user": {**user, "password_expires_at": None},
            "audit_ids": [secrets.token_urlsafe(16)],
            "issued_at": iso(period[0]),
            "expires_at": iso(period[1]),
            "project": {"id": project[0], "name": project[1], "domain": domain},
            "is_domain": False,
            "roles": [{"id": stable_id("admin"), "name": "admin"}],
            "catalog": catalog,
        }
    }


def network_versions(origin: str) -> Json:
    href = f"{origin}/network/v2.0/"
    version = {"id": "v2.0", "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}
    return {"versions": [version]}


def fault(path: str, status: int, message: str = "") -> Json:
    """The error body the service at `path` writes: each service has its own envelope."""
    if path.startswith("/network"):
        kind = "HTTPInternalServerError" if status >= 500 else "HTTPError"
        return {
            "NeutronError": {"type": kind, "message": message or "Request Failed", "detail": ""}
        }
    if path.startswith("/compute"):
        return {"computeFault": {"code": status, "message": message or "Unexpected API Error."}}
    title = "Bad Request" if status == 400 else "Error"
    return {"error": {"code": status, "title": title, "message": message or "Request failed."}}


def bad_request(message: str) -> Json:
    return {"badRequest": {"code": 400, "message": message}}


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def links(href: str) -> list[Json]:
    return [{"rel": "self", "href": href}, {"rel": "bookmark", "href": href}]


def stable_id(name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, name).hex


# The fields every item has whatever the world says are written densely, as the reference does.
# fmt: off
_SERVER_CONSTANT: Json = {
    "status": "ACTIVE", "metadata": {}, "accessIPv4": "", "accessIPv6": "", "progress": 0,
    "OS-DCF:diskConfig": "MANUAL", "OS-EXT-AZ:availability_zone": "nova", "config_drive": "",
    "key_name": None, "OS-SRV-USG:terminated_at": None, "OS-EXT-SRV-ATTR:launch_index": 0,
    "OS-EXT-SRV-ATTR:kernel_id": "", "OS-EXT-SRV-ATTR:ramdisk_id": "",
    "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda", "OS-EXT-SRV-ATTR:user_data": None,
    "OS-EXT-STS:task_state": None, "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:power_state": 1,
    "os-extended-volumes:volumes_attached": [], "security_groups": [{"name": "default"}],
    "locked": False, "locked_reason": None, "description": None, "tags": [],
    "trusted_image_certificates": None, "host_status": "UP", "server_groups": [],
    "pinned_availability_zone": None,
    "image": {"id": "5f0c6e5a-26f4-4d6e-9a1b-0d3f2f0f6b1c"},
    "flavor": {"vcpus": 2, "ram": 4096, "disk": 40, "ephemeral": 0, "swap": 0,
               "original_name": "m1.medium", "extra_specs": {}},
}
_NEUTRON_CONSTANT: Json = {
    "description": "", "tags": [], "created_at": _STAMP, "updated_at": _STAMP,
    "revision_number": 1,
}
_PORT_CONSTANT: Json = {
    "name": "", "admin_state_up": True, "status": "ACTIVE", "allowed_address_pairs": [],
    "extra_dhcp_opts": [], "port_security_enabled": True, "binding:vnic_type": "normal",
    "dns_name": "", "dns_assignment": [], "qos_policy_id": None, "qos_network_policy_id": None,
    "propagate_uplink_status": False, "ip_allocation": "immediate",
}
_NETWORK_CONSTANT: Json = {
    "admin_state_up": True, "status": "ACTIVE", "port_security_enabled": True,
    "availability_zone_hints": [], "availability_zones": ["nova"], "ipv4_address_scope": None,
    "ipv6_address_scope": None, "l2_adjacency": True, "qos_policy_id": None,
}
_FIP_CONSTANT: Json = {
    "dns_domain": "", "dns_name": "", "port_forwardings": [], "qos_policy_id": None,
    "qos_network_policy_id": None,
}
# fmt: on


def identity_version(origin: str) -> Json:
    media = {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{origin}/identity/v3/"}],
        "media-types": [media],
    }


def compute_version(origin: str) -> Json:
    media = "application/vnd.openstack.compute+json;version=2.1"
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": NOVA_MAX_VERSION,
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            {"rel": "self", "href": f"{origin}/compute/v2.1/"},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
        ],
        "media-types": [{"base": "application/json", "type": media}],
    }


def project(project_id: str, name: str) -> Json:
    return {"id": project_id, "name": name, "domain_id": "default", "parent_id": "default",
            "description": "", "enabled": True, "is_domain": False, "tags": [],
            "options": {}}  # fmt: skip


def server(
    server: Server,
    ports: Mapping[str, Port],
    networks: Mapping[str, Network],
    fip_by_port: Mapping[str, FloatingIp],
) -> Json:
    addresses: dict[str, list[Json]] = {}
    for port in (ports[port_id] for port_id in server.port_ids):
        fip = fip_by_port.get(port.id)
        pairs: list[tuple[IPv4Address | IPv6Address, str]] = [(port.address, "fixed")]
        if port.address6 is not None:
            pairs.append((port.address6, "fixed"))
        if fip:
            pairs.append((fip.address, "floating"))
        addresses.setdefault(networks[port.network_id].name, []).extend(
            {
                "version": a.version,
                "addr": str(a),
                "OS-EXT-IPS:type": kind,
                "OS-EXT-IPS-MAC:mac_addr": port.mac,
            }
            for a, kind in pairs
        )
    created = server.created.strftime("%Y-%m-%dT%H:%M:%SZ")
    host = f"compute-{int(server.id[:4], 16) % 16}"
    return {
        **_SERVER_CONSTANT,
        "id": server.id,
        "name": server.name,
        "tenant_id": server.project_id,
        "user_id": stable_id(server.project_id + "/user"),
        "hostId": hashlib.sha224((server.project_id + host).encode()).hexdigest(),
        "created": created,
        "updated": created,
        "addresses": addresses,
        "metadata": dict(server.metadata),
        "OS-SRV-USG:launched_at": created.replace("Z", ".000000"),
        "OS-EXT-SRV-ATTR:host": host,
        "OS-EXT-SRV-ATTR:hypervisor_hostname": f"{host}.cloud.example",
        "OS-EXT-SRV-ATTR:instance_name": f"instance-{int(server.id[:6], 16):08x}",
        "OS-EXT-SRV-ATTR:hostname": server.name,
        "OS-EXT-SRV-ATTR:reservation_id": f"r-{server.id[:8]}",
    }


def _owned(project_id: str) -> Json:
    return {**_NEUTRON_CONSTANT, "tenant_id": project_id, "project_id": project_id}


def port(port: Port, networks: Mapping[str, Network]) -> Json:
    net = networks[port.network_id]
    # Neutron's port reference: one fixed_ips entry per address, each naming its subnet; a
    # dual-stack port lists its IPv4 and its IPv6 address side by side.
    fixed = [{"subnet_id": net.subnet_id, "ip_address": str(port.address)}]
    if port.address6 is not None and net.subnet6_id is not None:
        fixed.append({"subnet_id": net.subnet6_id, "ip_address": str(port.address6)})
    return {
        **_owned(port.project_id),
        **_PORT_CONSTANT,
        "id": port.id,
        "network_id": port.network_id,
        "mac_address": port.mac,
        "device_id": port.device_id,
        "device_owner": port.device_owner,
        "fixed_ips": fixed,
        "security_groups": list(port.security_group_ids),
        "port_security_enabled": port.port_security_enabled,
    }


def floating_ip(fip: FloatingIp, port: Port | None, routers: Mapping[str, str]) -> Json:
    details = None
    if port is not None:
        details = {"name": "", "network_id": port.network_id, "mac_address": port.mac,
                   "admin_state_up": True, "status": "ACTIVE", "device_id": port.device_id,
                   "device_owner": port.device_owner}  # fmt: skip
    return {
        **_owned(fip.project_id),
        **_FIP_CONSTANT,
        "id": fip.id,
        "floating_ip_address": str(fip.address),
        "floating_network_id": fip.network_id,
        "fixed_ip_address": str(fip.fixed_address) if fip.fixed_address else None,
        "port_id": fip.port_id,
        "router_id": routers.get(port.network_id) if port else None,
        "status": "ACTIVE" if port else "DOWN",
        "port_details": details,
    }


def network(network: Network) -> Json:
    external = network.external
    return {
        **_owned(network.project_id),
        **_NETWORK_CONSTANT,
        "id": network.id,
        "name": network.name,
        "subnets": [network.subnet_id, *([network.subnet6_id] if network.subnet6_id else [])],
        "shared": external,
        "router:external": external,
        "is_default": external and network.name == "public",
        "mtu": 1500 if external else 1450,
        "provider:network_type": "flat" if external else "vxlan",
        "provider:physical_network": "physnet1" if external else None,
        "provider:segmentation_id": None if external else int(network.id[:4], 16),
    }


def security_group(group: SecurityGroup) -> Json:
    """A group as `GET /v2.0/security-groups` lists it, its rules inside (Networking API v2.0
    reference, "Security groups (security-groups)": each group carries `security_group_rules`)."""
    return {
        **_owned(group.project_id),
        "id": group.id,
        "name": group.name,
        "security_group_rules": [security_group_rule(group, rule) for rule in group.rules],
        "stateful": True,
        "shared": False,
    }


def security_group_rule(group: SecurityGroup, rule: SecurityGroupRule) -> Json:
    """A rule as `GET /v2.0/security-group-rules` lists it (Networking API v2.0 reference,
    "Security group rules (security-group-rules)"): `protocol`, the port bounds and
    `remote_ip_prefix` are null for "any"; `normalized_cidr` is the prefix with host bits
    cleared, null when the prefix is."""
    return {
        **_owned(group.project_id),
        "id": rule.id,
        "security_group_id": group.id,
        "direction": rule.direction,
        "ethertype": rule.ethertype,
        "protocol": rule.protocol,
        "port_range_min": rule.port_min,
        "port_range_max": rule.port_max,
        "remote_ip_prefix": rule.remote_ip_prefix,
        "normalized_cidr": rule.remote_ip_prefix,
        "remote_group_id": rule.remote_group_id,
        "remote_address_group_id": None,
        "belongs_to_default_sg": group.name == "default",
    }
