"""Every public address of every customer server, read from OpenStack with openstacksdk.

The only module that imports `openstack`. Six listings per refresh whatever the size of the
cloud (Keystone projects, Nova servers, Neutron floating IPs, external networks, ports, and
security groups with their rules), read as raw JSON through the proxy layer in worker threads
side by side, each item cut at once to the few fields a target needs: the SDK's resource
objects cost far more CPU (docs/performance.md). Owners are left UNKNOWN here: the billing side
fills them in. It never writes to OpenStack, and no credential ever reaches an exception or a
log line it produces.
Past 300 lines: every listing sits beside its field cut, so all that is read is seen at once.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from sys import intern
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qs, urljoin, urlsplit

import openstack
import openstack.exceptions
import openstack.warnings
import structlog

from goalkeeper.config import OpenStackSettings
from goalkeeper.exceptions import METADATA_KEY
from goalkeeper.firewall import SecurityGroup, SecurityGroupRule
from goalkeeper.inventory.openstack_targets import (
    NEUTRON_OWNED,
    FloatingIpRecord,
    Listings,
    PortRecord,
    ServerRecord,
    build_targets,
)
from goalkeeper.logs import first_line
from goalkeeper.model import AddressesKnown, Target

log = structlog.get_logger(__name__)
_SECRET_AUTH_KEYS = ("password", "application_credential_secret", "token", "secret")
Json: TypeAlias = dict[str, Any]
T = TypeVar("T")
_ACCEPT = {"Accept": "application/json"}
_ALL_PROJECTS = {"all_tenants": "True"}
# The server fields read here (id, name, tenant_id, metadata) are the same at every
# microversion; 2.1 is the base every Nova serves, and its body is the smallest.
_NOVA_VERSION = "2.1"
# Neutron returns only the fields asked for (`fields`, in its API reference). A Neutron that
# ignored it would still be read right, only slower.
_FIP_QUERY = {"fields": ["id", "floating_ip_address", "fixed_ip_address", "port_id",
                         "project_id", "port_details"]}  # fmt: skip
_EXTERNAL_QUERY = {"router:external": "true", "fields": "id"}
_PORT_FIELDS = ("id", "network_id", "device_id", "device_owner", "fixed_ips", "project_id",
                "security_groups", "port_security_enabled")  # fmt: skip
# Neutron's security group listing carries each group's rules (`security_group_rules`, in the
# Networking API v2.0 reference, "List security groups"): one listing, no per-rule requests.
_GROUP_QUERY = {"fields": ["id", "name", "security_group_rules"]}


class OpenStackError(Exception):
    """OpenStack could not be read. The message names the step that failed, never a secret."""


class OpenStackInventory:
    """Reads the targets; one connection, made on first use and remade after any failure."""

    def __init__(self, settings: OpenStackSettings, *, region: str | None = None) -> None:
        """`region` is the one region this reads (None: `settings.region`, the cloud's own);
        named regions are written on each target."""
        self.settings = settings
        self.region = region if region is not None else settings.region
        self._label = region or ""
        self._connection: Any = None
        # A cancelled await leaves its thread running: the lock keeps the next read off the
        # connection until that thread is done with it.
        self._lock = threading.Lock()

    async def targets(self, on_addresses: AddressesKnown | None = None) -> tuple[Target, ...]:
        """Every public address of every server, owners UNKNOWN; raise OpenStackError.

        `on_addresses`, if given, is called (in a worker thread) with the targets' addresses as
        soon as Neutron's listings are read, while Nova and Keystone are still being read.
        """
        # Joined in the thread too: a firewall per port is work the event loop need not do.
        return await asyncio.to_thread(
            lambda: build_targets(self.read_listings(on_addresses), region=self._label)
        )

    def read_listings(self, on_addresses: AddressesKnown | None = None) -> Listings:
        """Blocking: the listings, read whole and side by side. Call it from a worker thread.

        Keystone, Nova and Neutron each take their own time to answer a listing of thousands
        (and a big Nova, paging a thousand servers at a time, is slow): read one after another,
        the refresh took their sum; here it takes the longest. Which addresses are targets is
        known from Neutron alone: `on_addresses` hears them while Nova still pages. The threads
        share one session (keystoneauth fetches the token once, under its own lock) and all end
        before this returns, failed or not.
        """
        with self._lock, _sdk_deprecations_silenced():
            try:
                # Each proxy is made once, here, rather than raced for by the threads (making
                # one may already authenticate, to find its endpoint).
                identity, compute, network = _step("connecting", self._proxies)
                with ThreadPoolExecutor(6, thread_name_prefix="goalkeeper-openstack") as pool:
                    keystone = pool.submit(_step, "listing Keystone projects", _projects, identity)
                    nova = pool.submit(_step, "listing Nova servers", _servers, compute)
                    floating = pool.submit(
                        _step, "listing Neutron floating IPs", _floating_ips, network
                    )
                    externals = pool.submit(
                        _step, "listing external Neutron networks", _external_networks, network
                    )
                    # Every port, not only those on external networks: a floating IP's port is
                    # on a tenant network, and only the port itself names its security groups.
                    listed = pool.submit(_step, "listing Neutron ports", _ports, network)
                    groups = pool.submit(
                        _step, "listing Neutron security groups", _security_groups, network
                    )
                    # In this order, so that when all fail (a bad password) the first is named.
                    (fips, ports), external = floating.result(), externals.result()
                    ports |= listed.result()
                    firewalls = groups.result()
                    # A floating IP on a port of Neutron's own (dropped from the listing) is
                    # still followed, through port_details or, without them, every port.
                    if any(f.port_id and f.port_id not in ports for f in fips):
                        ports |= _step("listing Neutron ports", _ports, network, True)
                    if on_addresses is not None:
                        neutron_only = Listings({}, {}, external, ports, fips, firewalls)
                        on_addresses(frozenset(t.address for t in build_targets(neutron_only)))
                    projects, servers = keystone.result(), nova.result()
            except _StepFailed as failed:
                message = self._describe(failed.step, failed.error)
                self._disconnect()
                raise OpenStackError(message) from None
        log.info(
            "openstack listings read",
            projects=len(projects),
            servers=len(servers),
            ports=len(ports),
            floating_ips=len(fips),
            security_groups=len(firewalls),
        )
        return Listings(projects, servers, external, ports, fips, firewalls)

    def close(self) -> None:
        with self._lock:
            self._disconnect()

    def _proxies(self) -> tuple[Any, Any, Any]:
        conn = self._connect()
        return conn.identity, conn.compute, conn.network

    def _connect(self) -> Any:
        if self._connection is None:
            # cloud=None reads the OS_* variables; a name picks an entry of clouds.yaml.
            self._connection = openstack.connect(
                cloud=self.settings.cloud,
                region_name=self.region,
                api_timeout=self.settings.api_timeout,
                app_name="goalkeeper",
            )
        return self._connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception as err:  # closing a broken session must not hide why it broke
                log.debug("openstack connection close failed", error=type(err).__name__)

    def _describe(self, step: str, err: Exception) -> str:
        where = f"cloud {self.settings.cloud!r}" if self.settings.cloud else "OS_* variables"
        status = getattr(err, "status_code", None) or getattr(err, "http_status", None)
        if status == 401:
            detail = f"authentication refused (HTTP 401): check the credentials in {where}"
        else:
            text, kind = first_line(err), type(err).__name__
            detail = text if text.startswith(kind) else f"{kind}: {text}"
        for secret in self._secrets():
            detail = detail.replace(secret, "***")
        region = f" (region {self.region})" if self._label else ""
        return f"OpenStack{region} failed while {step}: {detail}"

    def _secrets(self) -> list[str]:
        try:
            auth = self._connection.config.get_auth_args() if self._connection else {}
        except Exception:  # a half-built connection has no auth to read
            auth = {}
        return [
            str(value)
            for key, value in auth.items()
            # Very short values would mangle the message and cannot be real secrets anyway.
            if value and len(str(value)) >= 4 and any(part in key for part in _SECRET_AUTH_KEYS)
        ]


def _listing(
    proxy: Any,
    path: str,
    params: Mapping[str, str | Sequence[str]] | None = None,
    microversion: str | None = None,
) -> Iterator[Json]:
    """Every item of the collection at `path` (`/servers/detail`: "servers"), page by page,
    as `Resource.list` pages: the next page is the one the service links to, marker included.
    """
    key = path.split("/")[1].replace("-", "_")  # Neutron's security-groups: security_groups
    url: str | None = path
    query: dict[str, Any] = dict(params or {})
    while url is not None:
        marker = query.get("marker")
        items, url, query = _read_page(proxy, url, query, key, microversion)
        yield from items
        if not items:
            return
        if url is not None and marker is not None and query.get("marker") == marker:
            raise ValueError(f"GET {path} pages endlessly: its next page repeats the last marker")
        del items  # one page in memory at a time: this one goes before the next is read


def _read_page(
    proxy: Any, url: str, query: Mapping[str, Any], key: str, microversion: str | None
) -> tuple[list[Json], str | None, dict[str, list[str]]]:
    # The proxy's own get: catalog endpoint, token, microversion header, api_timeout. It does
    # not raise on HTTP errors (openstacksdk checks each answer itself), so do that here.
    response = proxy.get(url, params=query, headers=_ACCEPT, microversion=microversion)
    openstack.exceptions.raise_from_response(response)
    body = response.json()
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"the answer to GET {urlsplit(url).path} holds no {key!r} list")
    if body.get("truncated"):  # Keystone's list_limit cuts a listing instead of paging it
        path = urlsplit(response.url).path
        log.warning("openstack cut a listing short", path=path, items=len(items))
    return items, *next_page(body, key, response.links)


def next_page(
    body: Json, key: str, headers: Mapping[str, Mapping[str, str]]
) -> tuple[str | None, dict[str, list[str]]]:
    """The next page's URL and query, found and split as openstacksdk does it.

    Keystone writes `links` as a dict (`next`: a URL or null; openstacksdk 4.x misreads it as a
    list, so it is read right here); Nova and Neutron write `<collection>_links`, a list of
    {rel, href}; failing both, a `Link` header (`headers`: requests' `Response.links`). The
    query is split off so that it is sent once, not appended to on every page (HTTP 414), and
    a link starting with the API version (`/v2.0/...`) is made relative to the endpoint.
    """
    links = body["links"] if "links" in body else body.get(f"{key}_links") or []
    if isinstance(links, dict):
        href = links.get("next")
    else:
        href = next((link.get("href") for link in links if link.get("rel") == "next"), None)
    href = href or headers.get("next", {}).get("url")
    if not href:
        return None, {}
    if href.startswith("/v"):
        href = href[href.find("/", 1) :]
    url = urlsplit(href)
    return urljoin(href, url.path), parse_qs(url.query)


class _StepFailed(Exception):
    def __init__(self, step: str, error: Exception) -> None:
        super().__init__(step)
        self.step, self.error = step, error


def _step(step: str, read: Callable[..., T], *args: Any) -> T:
    """`read(*args)`, any failure tagged with the step it happened in, for the message."""
    try:
        return read(*args)
    except Exception as err:
        raise _StepFailed(step, err) from err


def _projects(identity: Any) -> dict[str, str]:
    return {p["id"]: p.get("name") or "" for p in _listing(identity, "/projects")}


def _servers(compute: Any) -> dict[str, ServerRecord]:
    listing = _listing(compute, "/servers/detail", _ALL_PROJECTS, _NOVA_VERSION)
    return {s["id"]: _server(s) for s in listing}


def _external_networks(network: Any) -> frozenset[str]:
    return frozenset(n["id"] for n in _listing(network, "/networks", _EXTERNAL_QUERY))


def _ports(network: Any, keep_neutrons: bool = False) -> dict[str, PortRecord]:
    """Every port that may be a server's, or every port at all with `keep_neutrons`.

    Most ports on external networks are Neutron's own (a floating IP's, a router's gateway:
    device_owner "network:...", a prefix Neutron reserves for itself), never a server's, and so
    are a tenant network's DHCP and router ports: dropped as they are read. Every port is kept
    when a floating IP without port_details names a port the first listing dropped.
    """
    query: dict[str, str | Sequence[str]] = {"fields": _PORT_FIELDS}
    return {
        p["id"]: _port(p)
        for p in _listing(network, "/ports", query)
        if keep_neutrons or not str(p.get("device_owner") or "").startswith(NEUTRON_OWNED)
    }


def _security_groups(network: Any) -> dict[str, SecurityGroup]:
    """Every security group with its rules, each rule cut to the fields a cause needs."""
    groups = {}
    for group in _listing(network, "/security-groups", _GROUP_QUERY):
        rules = tuple(_rule(r, group["id"]) for r in group.get("security_group_rules") or ())
        groups[group["id"]] = SecurityGroup(group["id"], group.get("name") or "", rules)
    return groups


def _rule(rule: Json, group_id: str) -> SecurityGroupRule:
    # Neutron writes an IANA number as text already ("6"); an int from some other writer is
    # made text too, so that the matcher compares like with like.
    protocol = rule.get("protocol")
    return SecurityGroupRule(
        id=rule["id"],
        security_group_id=rule.get("security_group_id") or group_id,
        # Neutron accepts only these values; anything else is read as what never admits.
        direction="ingress" if rule.get("direction") == "ingress" else "egress",
        ethertype="IPv6" if rule.get("ethertype") == "IPv6" else "IPv4",
        protocol=None if protocol is None else intern(str(protocol).lower()),
        port_range_min=_bound(rule.get("port_range_min")),
        port_range_max=_bound(rule.get("port_range_max")),
        remote_ip_prefix=rule.get("remote_ip_prefix") or None,
        remote_group_id=rule.get("remote_group_id") or None,
    )


def _bound(value: Any) -> int | None:
    return None if value is None else int(value)


def _floating_ips(network: Any) -> tuple[tuple[FloatingIpRecord, ...], dict[str, PortRecord]]:
    """The floating IPs, and the ports their `port_details` describe."""
    fips, ports = [], {}
    for fip in _listing(network, "/floatingips", _FIP_QUERY):
        port_id, fixed = fip.get("port_id") or None, fip.get("fixed_ip_address")
        project_id = intern(fip.get("project_id") or "")
        fips.append(FloatingIpRecord(fip.get("floating_ip_address") or "", port_id, project_id))
        details = fip.get("port_details")
        if port_id and isinstance(details, dict) and details.get("device_id") is not None:
            ports[port_id] = PortRecord(
                id=port_id,
                network_id=intern(details.get("network_id") or ""),
                device_id=details.get("device_id") or "",
                device_owner=intern(details.get("device_owner") or ""),
                addresses=(fixed,) if fixed else (),
            )
    return tuple(fips), ports


# Project and network ids and device owners repeat across thousands of items, and JSON decoding
# makes each a string of its own: interned, the listings of 10,000 servers keep a quarter less.
def _server(server: Json) -> ServerRecord:
    return ServerRecord(
        server["id"],
        server.get("name") or "",
        intern(server.get("tenant_id") or ""),
        allow=_allow(server.get("metadata")),
    )


def _allow(metadata: Any) -> str | None:
    """The server's goalkeeper.allow (Compute API: `metadata` maps strings to strings); a value
    of another type is kept as text, so that it is reported as unreadable, not dropped."""
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        return None
    value = metadata[METADATA_KEY]
    return value if isinstance(value, str) else str(value)


def _port(port: Json) -> PortRecord:
    return PortRecord(
        id=port["id"],
        network_id=intern(port.get("network_id") or ""),
        device_id=port.get("device_id") or "",
        device_owner=intern(port.get("device_owner") or ""),
        addresses=tuple(str(ip.get("ip_address", "")) for ip in port.get("fixed_ips") or ()),
        project_id=intern(port.get("project_id") or port.get("tenant_id") or ""),
        security_group_ids=tuple(intern(str(g)) for g in port.get("security_groups") or ()),
        # Absent without Neutron's port-security extension: security groups then always apply.
        port_security_enabled=port.get("port_security_enabled") is not False,
    )


@contextmanager
def _sdk_deprecations_silenced() -> Iterator[None]:
    """openstacksdk 4.x warns about its own internals on every connect and request.

    Those warnings are about the library, not about us, and would turn into errors under
    `-W error`. The filter change is process-wide for the length of one refresh; nothing else
    in the daemon changes warning filters at run time, so the restore cannot undo another's.
    """
    with warnings.catch_warnings():
        for category in (
            openstack.warnings.OpenStackDeprecationWarning,
            openstack.warnings.RemovedInSDK50Warning,
            openstack.warnings.RemovedInSDK60Warning,
        ):
            warnings.simplefilter("ignore", category)
        yield
