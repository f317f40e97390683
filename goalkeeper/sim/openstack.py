"""A fake OpenStack (Keystone v3, Nova, Neutron) serving a simulated World over aiohttp.

It speaks the wire contract of the OpenStack API reference, so that the real openstacksdk can
be pointed at it: version discovery documents at each service root, tokens in X-Subject-Token
with `expires_at` and a service catalog, Nova's `servers/detail` paged by limit/marker with
`servers_links` and microversion headers, Neutron collections paged with `<collection>_links`.
Like the real services it pages with a server-side maximum (`page_size`: Nova's max_limit,
Neutron's pagination_max_limit) and links to a next page whenever a page is full; Keystone does
not page project listings. Unknown or expired tokens get 401.

Every request is counted by path; tests make a path fail with `faults`. It is a test double:
one admin user, every token sees every project, nothing can be written. The daemon never
imports it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiMapping

from goalkeeper.sim.world import FloatingIp, Network, Port, SecurityGroup, Server, World

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STALL = 0  # a fault that never answers: for timeouts
NOVA_MAX_VERSION = "2.96"
_STAMP = "2024-01-01T00:00:00Z"
_DISCOVERY = {"/identity", "/identity/v3", "/compute", "/compute/v2.1", "/network"}
_NEUTRON = ("floatingips", "ports", "networks", "security-groups")
_NOT_FILTERS = {"limit", "marker", "page_reverse", "fields", "sort_key", "sort_dir"}
_UNAUTHORIZED = {
    "error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
}


@dataclass(frozen=True, slots=True)
class _Token:
    project_id: str
    expires_at: datetime


_TOKEN = web.RequestKey("token", _Token)


class OpenStackSim:
    """Keystone at /identity, Nova at /compute/v2.1, Neutron at /network, on one app."""

    def __init__(
        self,
        world: World,
        *,
        page_size: int = 1000,
        username: str = "goalkeeper",
        project_name: str = "admin",
        region: str = "RegionOne",
        token_ttl: timedelta = timedelta(hours=1),
        fip_port_details: bool = True,
    ) -> None:
        self.page_size = page_size
        self.fip_port_details = fip_port_details  # False: a Neutron without fip-port-details
        self.username = username
        self.password = secrets.token_urlsafe(16)
        self.project_name = project_name
        self.region = region
        self.application_credential_id = uuid.uuid4().hex
        self.application_credential_secret = secrets.token_urlsafe(24)
        self.token_ttl = token_ttl
        self.requests: Counter[str] = Counter()
        self.faults: dict[str, int] = {}  # path -> the HTTP status it answers instead, or STALL
        self._released = asyncio.Event()
        self._tokens: dict[str, _Token] = {}
        self.load(world)

    def load(self, world: World) -> None:
        """Serve `world` from now on; it is rendered and indexed here, once, not per request."""
        self.world = world
        networks = {network.id: network for network in world.networks}
        ports = {port.id: port for port in world.ports}
        fip_by_port = {fip.port_id: fip for fip in world.floating_ips if fip.port_id}
        routers = {
            p.network_id: p.device_id
            for p in world.ports
            if p.device_owner == "network:router_interface"
        }
        servers = sorted(world.servers, key=lambda s: (s.created, s.id), reverse=True)
        self._servers = [_server(s, ports, networks, fip_by_port) for s in servers]
        self._projects = [_project(world.admin_project_id, self.project_name)]
        self._projects += [_project(p.id, p.name) for p in world.projects]
        fips = [_fip(f, ports.get(f.port_id or ""), routers) for f in world.floating_ips]
        if not self.fip_port_details:
            fips = [{k: v for k, v in fip.items() if k != "port_details"} for fip in fips]
        self._neutron = {
            "floatingips": sorted(fips, key=_by_id),
            "ports": sorted((_port(p, networks) for p in world.ports), key=_by_id),
            "networks": sorted((_network(n) for n in world.networks), key=_by_id),
            "security-groups": sorted((_group(g) for g in world.security_groups), key=_by_id),
        }
        # marker -> where the next page starts, for the unfiltered listings
        self._positions = {
            name: _positions(items)
            for name, items in (("servers", self._servers), *self._neutron.items())
        }

    def release(self) -> None:
        """Let every stalled request end, so that the server can close."""
        self._released.set()

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for path, handler in (
            ("/identity", self._identity_versions),
            ("/identity/v3", self._identity_version),
            ("/compute", self._compute_versions),
            ("/compute/v2.1", self._compute_version),
            ("/network", self._network_versions),
        ):
            app.router.add_get(path, handler)
            app.router.add_get(path + "/", handler)
        app.router.add_post("/identity/v3/auth/tokens", self._issue_token)
        app.router.add_get("/identity/v3/projects", self._list_projects)
        app.router.add_get("/compute/v2.1/servers/detail", self._list_servers)
        app.router.add_get("/network/v2.0/{collection}", self._list_neutron)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        if self.faults.get(request.path) == STALL:
            await self._released.wait()  # the client gives up first; close() ends the wait
            return _fault(request.path, 503)
        if request.path in self.faults:
            return _fault(request.path, self.faults[request.path])
        path = request.path.rstrip("/")
        if path not in _DISCOVERY and path != "/identity/v3/auth/tokens":
            token = self._tokens.get(request.headers.get("X-Auth-Token", ""))
            if token is None or token.expires_at <= datetime.now(UTC):
                return web.json_response(_UNAUTHORIZED, status=401)
            request[_TOKEN] = token
        return await handler(request)

    # -- Keystone ----------------------------------------------------------------------------

    async def _identity_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": {"values": [_identity_v3(request)]}}, status=300)

    async def _identity_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": _identity_v3(request)})

    async def _issue_token(self, request: web.Request) -> web.Response:
        try:
            identity = (await request.json())["auth"]["identity"]
            methods = list(identity["methods"])
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"error": {"code": 400, "title": "Bad Request", "message": "Malformed auth."}},
                status=400,
            )
        if not self._credentials_ok(methods, identity):
            return web.json_response(_UNAUTHORIZED, status=401)
        now = datetime.now(UTC)
        value = secrets.token_hex(32)
        token = self._tokens[value] = _Token(self.world.admin_project_id, now + self.token_ttl)
        body = {"token": self._token_body(str(request.url.origin()), methods, now, token)}
        return web.json_response(body, status=201, headers={"X-Subject-Token": value})

    def _credentials_ok(self, methods: list[str], identity: Mapping[str, Any]) -> bool:
        if methods == ["password"]:
            user = identity.get("password", {}).get("user", {})
            given, expected = str(user.get("password", "")), self.password
            return user.get("name") == self.username and secrets.compare_digest(given, expected)
        if methods == ["application_credential"]:
            credential = identity.get("application_credential", {})
            given, expected = str(credential.get("secret", "")), self.application_credential_secret
            known = credential.get("id") == self.application_credential_id
            return known and secrets.compare_digest(given, expected)
        return False

    def _token_body(self, origin: str, methods: list[str], now: datetime, token: _Token) -> Json:
        domain = {"id": "default", "name": "Default"}
        catalog = [
            {
                "id": _stable_id(kind),
                "type": kind,
                "name": name,
                "endpoints": [
                    {
                        "id": _stable_id(url + interface),
                        "interface": interface,
                        "region": self.region,
                        "region_id": self.region,
                        "url": url,
                    }
                    for interface in ("public", "internal", "admin")
                ],
            }
            for kind, name, url in (
                ("identity", "keystone", f"{origin}/identity"),
                ("compute", "nova", f"{origin}/compute/v2.1"),
                ("network", "neutron", f"{origin}/network"),
            )
        ]
        user = {"id": _stable_id(self.username), "name": self.username, "domain": domain}
        return {
            "methods": methods,
            "user": {**user, "password_expires_at": None},
            "audit_ids": [secrets.token_urlsafe(16)],
            "issued_at": _iso(now),
            "expires_at": _iso(token.expires_at),
            "project": {"id": token.project_id, "name": self.project_name, "domain": domain},
            "is_domain": False,
            "roles": [{"id": _stable_id("admin"), "name": "admin"}],
            "catalog": catalog,
        }

    async def _list_projects(self, request: web.Request) -> web.Response:
        base = f"{request.url.origin()}/identity/v3/projects/"
        projects = [{**p, "links": {"self": base + p["id"]}} for p in self._projects]
        links = {"self": str(request.url), "previous": None, "next": None}
        return web.json_response({"links": links, "projects": projects})

    # -- Nova --------------------------------------------------------------------------------

    async def _compute_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": [_compute_v21(request)]})

    async def _compute_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": _compute_v21(request)})

    async def _list_servers(self, request: web.Request) -> web.Response:
        asked = request.headers.get("OpenStack-API-Version", "compute 2.1").split()[-1]
        served = NOVA_MAX_VERSION if asked == "latest" else asked
        if not _version("2.1") <= _version(served) <= _version(NOVA_MAX_VERSION):
            message = f"Version {asked} is not supported by the API (2.1 to {NOVA_MAX_VERSION})."
            return web.json_response(
                {"computeFault": {"code": 406, "message": message}}, status=406
            )
        query = request.query
        items = self._servers
        if "all_tenants" not in query:
            items = [s for s in items if s["tenant_id"] == request[_TOKEN].project_id]
        if "project_id" in query:
            items = [s for s in items if s["tenant_id"] == query["project_id"]]
        positions = self._positions["servers"] if items is self._servers else None
        page, following = _page(items, query, self.page_size, positions)
        base = f"{request.url.origin()}/compute/v2.1/servers/"
        body: Json = {"servers": [{**s, "links": _links(base + s["id"])} for s in page]}
        if following is not None:
            body["servers_links"] = [{"rel": "next", "href": _href(request, following)}]
        headers = {
            "OpenStack-API-Version": f"compute {served}",
            "X-OpenStack-Nova-API-Version": served,
            "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
        }
        return web.json_response(body, headers=headers)

    # -- Neutron -----------------------------------------------------------------------------

    async def _network_versions(self, request: web.Request) -> web.Response:
        href = f"{request.url.origin()}/network/v2.0/"
        version = {"id": "v2.0", "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}
        return web.json_response({"versions": [version]})

    async def _list_neutron(self, request: web.Request) -> web.Response:
        collection = request.match_info["collection"]
        if collection not in _NEUTRON:
            raise web.HTTPNotFound
        items = self._neutron[collection]
        filters = {k: request.query.getall(k) for k in request.query if k not in _NOT_FILTERS}
        if filters:
            items = [item for item in items if _matches(item, filters)]
        positions = None if filters else self._positions[collection]
        page, following = _page(items, request.query, self.page_size, positions, neutron=True)
        links = []
        if following is not None:
            links.append({"rel": "next", "href": _href(request, following)})
        if "marker" in request.query and page:
            previous = MultiDict(request.query)
            previous.update(marker=page[0]["id"], page_reverse="True")
            links.append({"rel": "previous", "href": _href(request, previous)})
        key = collection.replace("-", "_")
        body: Json = {key: page}
        if links:
            body[f"{key}_links"] = links
        return web.json_response(body)


def _page(
    items: list[Json],
    query: MultiMapping[str],
    maximum: int,
    positions: Mapping[str, int] | None,
    *,
    neutron: bool = False,
) -> tuple[list[Json], MultiDict[str] | None]:
    """One page and, when the page is full, the query for the next (marker = its last id)."""
    try:
        limit = min(int(query.get("limit", maximum)), maximum)
    except ValueError:
        raise _bad_request(f"limit must be an integer: {query.get('limit')!r}") from None
    start = 0
    if "marker" in query:
        if positions is None:  # a filtered listing: no index was built for it
            positions = _positions(items)
        start = positions.get(query["marker"], -1)
        if start < 0:
            raise _bad_request(f"marker [{query['marker']}] not found")
    page = items[start : start + limit] if limit > 0 else items[start:]
    if limit <= 0 or len(page) < limit:
        return page, None
    following = MultiDict(query)  # repeated filters (network_id=a&network_id=b) stay repeated
    following["marker"] = page[-1]["id"]
    if neutron:  # Neutron always writes the limit into its links; Nova keeps the query as is
        following["limit"] = str(limit)
    return page, following


def _positions(items: list[Json]) -> dict[str, int]:
    return {item["id"]: n + 1 for n, item in enumerate(items)}


def _matches(item: Json, filters: Mapping[str, list[str]]) -> bool:
    """Neutron's filters: every key must match, a repeated key matches any of its values."""
    for key, wanted in filters.items():
        value = item.get(key)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text not in ([w.lower() for w in wanted] if isinstance(value, bool) else wanted):
            return False
    return True


def _href(request: web.Request, query: MultiMapping[str]) -> str:
    return str(request.url.with_query(query))


def _bad_request(message: str) -> web.HTTPBadRequest:
    body = json.dumps({"badRequest": {"code": 400, "message": message}})
    return web.HTTPBadRequest(text=body, content_type="application/json")


def _fault(path: str, status: int) -> web.Response:
    if path.startswith("/network"):
        kind = "HTTPInternalServerError" if status >= 500 else "HTTPError"
        body: Json = {"NeutronError": {"type": kind, "message": "Request Failed", "detail": ""}}
    elif path.startswith("/compute"):
        body = {"computeFault": {"code": status, "message": "Unexpected API Error."}}
    else:
        body = {"error": {"code": status, "title": "Error", "message": "Injected fault."}}
    return web.json_response(body, status=status)


def _by_id(item: Json) -> str:
    return str(item["id"])


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def _links(href: str) -> list[Json]:
    return [{"rel": "self", "href": href}, {"rel": "bookmark", "href": href}]


def _stable_id(name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, name).hex


# -- JSON shapes, after the OpenStack API reference ------------------------------------------
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


def _identity_v3(request: web.Request) -> Json:
    media = {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{request.url.origin()}/identity/v3/"}],
        "media-types": [media],
    }


def _compute_v21(request: web.Request) -> Json:
    media = "application/vnd.openstack.compute+json;version=2.1"
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": NOVA_MAX_VERSION,
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            {"rel": "self", "href": f"{request.url.origin()}/compute/v2.1/"},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
        ],
        "media-types": [{"base": "application/json", "type": media}],
    }


def _project(project_id: str, name: str) -> Json:
    return {
        "id": project_id,
        "name": name,
        "domain_id": "default",
        "parent_id": "default",
        "description": "",
        "enabled": True,
        "is_domain": False,
        "tags": [],
        "options": {},
    }


def _server(
    server: Server,
    ports: Mapping[str, Port],
    networks: Mapping[str, Network],
    fip_by_port: Mapping[str, FloatingIp],
) -> Json:
    addresses: dict[str, list[Json]] = {}
    for port in (ports[port_id] for port_id in server.port_ids):
        fip = fip_by_port.get(port.id)
        pairs = [(port.address, "fixed")] + ([(fip.address, "floating")] if fip else [])
        addresses.setdefault(networks[port.network_id].name, []).extend(
            {
                "version": 4,
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
        "user_id": _stable_id(server.project_id + "/user"),
        "hostId": hashlib.sha224((server.project_id + host).encode()).hexdigest(),
        "created": created,
        "updated": created,
        "addresses": addresses,
        "OS-SRV-USG:launched_at": created.replace("Z", ".000000"),
        "OS-EXT-SRV-ATTR:host": host,
        "OS-EXT-SRV-ATTR:hypervisor_hostname": f"{host}.cloud.example",
        "OS-EXT-SRV-ATTR:instance_name": f"instance-{int(server.id[:6], 16):08x}",
        "OS-EXT-SRV-ATTR:hostname": server.name,
        "OS-EXT-SRV-ATTR:reservation_id": f"r-{server.id[:8]}",
    }


def _owned(project_id: str) -> Json:
    return {**_NEUTRON_CONSTANT, "tenant_id": project_id, "project_id": project_id}


def _port(port: Port, networks: Mapping[str, Network]) -> Json:
    fixed = {"subnet_id": networks[port.network_id].subnet_id, "ip_address": str(port.address)}
    return {
        **_owned(port.project_id),
        **_PORT_CONSTANT,
        "id": port.id,
        "network_id": port.network_id,
        "mac_address": port.mac,
        "device_id": port.device_id,
        "device_owner": port.device_owner,
        "fixed_ips": [fixed],
        "security_groups": list(port.security_group_ids),
    }


def _fip(fip: FloatingIp, port: Port | None, routers: Mapping[str, str]) -> Json:
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


def _network(network: Network) -> Json:
    external = network.external
    return {
        **_owned(network.project_id),
        **_NETWORK_CONSTANT,
        "id": network.id,
        "name": network.name,
        "subnets": [network.subnet_id],
        "shared": external,
        "router:external": external,
        "is_default": external and network.name == "public",
        "mtu": 1500 if external else 1450,
        "provider:network_type": "flat" if external else "vxlan",
        "provider:physical_network": "physnet1" if external else None,
        "provider:segmentation_id": None if external else int(network.id[:4], 16),
    }


def _group(group: SecurityGroup) -> Json:
    rules = [
        {
            **_owned(group.project_id),
            "id": rule.id,
            "security_group_id": group.id,
            "direction": rule.direction,
            "ethertype": "IPv4",
            "protocol": rule.protocol,
            "port_range_min": rule.port_min,
            "port_range_max": rule.port_max,
            "remote_ip_prefix": rule.remote_ip_prefix,
            "normalized_cidr": rule.remote_ip_prefix,
            "remote_group_id": rule.remote_group_id,
            "remote_address_group_id": None,
            "belongs_to_default_sg": group.name == "default",
        }
        for rule in group.rules
    ]
    return {
        **_owned(group.project_id),
        "id": group.id,
        "name": group.name,
        "security_group_rules": rules,
        "stateful": True,
        "shared": False,
    }
