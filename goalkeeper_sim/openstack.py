"""A fake OpenStack (Keystone v3, Nova, Neutron) serving a simulated World over aiohttp.

It speaks the wire contract of the OpenStack API reference, so that the real openstacksdk can
be pointed at it: version discovery documents at each service root, tokens in X-Subject-Token
with `expires_at` and a service catalog, Nova's `servers/detail` paged by limit/marker with
`servers_links` and microversion headers, Neutron collections paged with `<collection>_links`.
Like the real services it pages with a server-side maximum (`page_size`: Nova's max_limit,
Neutron's pagination_max_limit) and links to a next page whenever a page is full; Keystone does
not page project listings (it cuts them at `list_limit`, marked `truncated`). Neutron answers
only the `fields` asked for. Unknown or expired tokens get 401. The JSON bodies are built in
`openstack_json`; this module routes, authenticates and pages.

Every request is counted by path; tests make a path fail with `faults`, or page forever with
`ignore_marker`. It is a test double: one admin user, every token sees every project, nothing
can be written. The daemon never imports it.
Past 300 lines: three services' routes, auth and paging, as one Keystone catalog serves them.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

from aiohttp import web
from multidict import MultiDict, MultiMapping

from goalkeeper_sim import openstack_json as shapes
from goalkeeper_sim.faults import Faults, Handler
from goalkeeper_sim.openstack_json import NOVA_MAX_VERSION, Json
from goalkeeper_sim.world import World

_DISCOVERY = {"/identity", "/identity/v3", "/compute", "/compute/v2.1", "/network"}
_NEUTRON = ("floatingips", "ports", "networks", "security-groups", "security-group-rules")
_NOT_FILTERS = {"limit", "marker", "page_reverse", "fields", "sort_key", "sort_dir"}


@dataclass(frozen=True, slots=True)
class _Token:
    project_id: str
    expires_at: datetime


_TOKEN = web.RequestKey("token", _Token)


class OpenStackSim(Faults):
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
        super().__init__()
        self.page_size = page_size
        self.fip_port_details = fip_port_details  # False: a Neutron without fip-port-details
        self.username = username
        self.password = secrets.token_urlsafe(16)
        self.project_name = project_name
        self.region = region
        self.application_credential_id = uuid.uuid4().hex
        self.application_credential_secret = secrets.token_urlsafe(24)
        self.token_ttl = token_ttl
        # Paths that serve their first page whatever the marker, as some old services did:
        # every next link then repeats the same marker.
        self.ignore_marker: set[str] = set()
        # Keystone's [DEFAULT] list_limit: a longer listing is cut and marked `truncated`.
        self.list_limit: int | None = None
        self._tokens: dict[str, _Token] = {}
        # Other regions' Nova and Neutron (region name -> origin), listed in this Keystone's
        # catalog; their fakes take this one's tokens (`serve_region_of`).
        self.other_regions: dict[str, str] = {}
        self.load(world)

    def serve_region_of(self, primary: OpenStackSim, origin: str) -> None:
        """Be `primary`'s cloud's region `self.region` at `origin`: take its Keystone's tokens,
        and be listed in its catalog."""
        self._tokens = primary._tokens
        primary.other_regions[self.region] = origin

    def load(self, world: World) -> None:
        """Serve `world` from now on; it is rendered and indexed here, once, not per request."""
        self.world = world
        self._servers, self._projects, self._neutron = shapes.render(
            world, admin_project_name=self.project_name, fip_port_details=self.fip_port_details
        )
        # marker -> where the next page starts, for the unfiltered listings
        self._positions = {
            name: _positions(items)
            for name, items in (("servers", self._servers), *self._neutron.items())
        }
        # Filtered listings, each made once per world: filtering every item again for every
        # page made the fake, not the client, what a benchmark of 16,384 servers measured.
        self._filtered: dict[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], _Listed] = {}

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
        if (status := await self.injected(request.path)) is not None:
            return _fault(request.path, status)
        path = request.path.rstrip("/")
        if path not in _DISCOVERY and path != "/identity/v3/auth/tokens":
            token = self._tokens.get(request.headers.get("X-Auth-Token", ""))
            if token is None or token.expires_at <= datetime.now(UTC):
                return web.json_response(shapes.UNAUTHORIZED, status=401)
            request[_TOKEN] = token
        return await handler(request)

    # -- Keystone ----------------------------------------------------------------------------

    async def _identity_versions(self, request: web.Request) -> web.Response:
        version = shapes.identity_version(_origin(request))
        return web.json_response({"versions": {"values": [version]}}, status=300)

    async def _identity_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": shapes.identity_version(_origin(request))})

    async def _issue_token(self, request: web.Request) -> web.Response:
        try:
            identity = (await request.json())["auth"]["identity"]
            methods = list(identity["methods"])
        except (ValueError, KeyError, TypeError):
            body = shapes.fault(request.path, 400, "Malformed auth.")
            return web.json_response(body, status=400)
        if not self._credentials_ok(methods, identity):
            return web.json_response(shapes.UNAUTHORIZED, status=401)
        now = datetime.now(UTC)
        value = secrets.token_hex(32)
        token = self._tokens[value] = _Token(self.world.admin_project_id, now + self.token_ttl)
        body = shapes.token(
            _origin(request),
            methods=methods,
            period=(now, token.expires_at),
            project=(token.project_id, self.project_name),
            username=self.username,
            region=self.region,
            regions=self.other_regions,
        )
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

    async def _list_projects(self, request: web.Request) -> web.Response:
        base = f"{_origin(request)}/identity/v3/projects/"
        projects = [{**p, "links": {"self": base + p["id"]}} for p in self._projects]
        links = {"self": str(request.url), "previous": None, "next": None}
        body: Json = {"links": links, "projects": projects}
        if self.list_limit is not None and len(projects) > self.list_limit:
            body |= {"projects": projects[: self.list_limit], "truncated": True}
        return web.json_response(body)

    # -- Nova --------------------------------------------------------------------------------

    async def _compute_versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": [shapes.compute_version(_origin(request))]})

    async def _compute_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": shapes.compute_version(_origin(request))})

    async def _list_servers(self, request: web.Request) -> web.Response:
        asked = request.headers.get("OpenStack-API-Version", "compute 2.1").split()[-1]
        served = NOVA_MAX_VERSION if asked == "latest" else asked
        if not _version("2.1") <= _version(served) <= _version(NOVA_MAX_VERSION):
            message = f"Version {asked} is not supported by the API (2.1 to {NOVA_MAX_VERSION})."
            return web.json_response(shapes.fault(request.path, 406, message), status=406)
        query = self._query(request)
        items = self._servers
        if "all_tenants" not in query:
            items = [s for s in items if s["tenant_id"] == request[_TOKEN].project_id]
        if "project_id" in query:
            items = [s for s in items if s["tenant_id"] == query["project_id"]]
        positions = self._positions["servers"] if items is self._servers else None
        page, following = _page(items, query, self.page_size, positions)
        base = f"{_origin(request)}/compute/v2.1/servers/"
        body: Json = {"servers": [{**s, "links": shapes.links(base + s["id"])} for s in page]}
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
        return web.json_response(shapes.network_versions(_origin(request)))

    async def _list_neutron(self, request: web.Request) -> web.Response:
        collection = request.match_info["collection"]
        if collection not in _NEUTRON:
            raise web.HTTPNotFound
        query = self._query(request)
        filters = {k: query.getall(k) for k in query if k not in _NOT_FILTERS}
        items, positions = self._neutron[collection], self._positions[collection]
        if filters:
            wanted = (collection, tuple(sorted((k, tuple(v)) for k, v in filters.items())))
            if wanted not in self._filtered:
                chosen = [item for item in items if _matches(item, filters)]
                self._filtered[wanted] = (chosen, _positions(chosen))
            items, positions = self._filtered[wanted]
        page, following = _page(items, query, self.page_size, positions, neutron=True)
        links = []
        if following is not None:
            links.append({"rel": "next", "href": _href(request, following)})
        if "marker" in query and page:
            previous = MultiDict(query)
            previous.update(marker=page[0]["id"], page_reverse="True")
            links.append({"rel": "previous", "href": _href(request, previous)})
        if fields := query.getall("fields", []):
            # Only the fields asked for; the links above were made from whole items, as
            # Neutron pages before it strips fields (the id is always there for the marker).
            page = [{k: item[k] for k in fields if k in item} for item in page]
        key = collection.replace("-", "_")
        body: Json = {key: page}
        if links:
            body[f"{key}_links"] = links
        return web.json_response(body)

    def _query(self, request: web.Request) -> MultiMapping[str]:
        if request.path not in self.ignore_marker:
            return request.query
        query = MultiDict(request.query)
        query.popall("marker", None)
        return query


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


_Listed: TypeAlias = tuple[list[Json], dict[str, int]]  # items, and where each id is


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
    body = json.dumps(shapes.bad_request(message))
    return web.HTTPBadRequest(text=body, content_type="application/json")


def _fault(path: str, status: int) -> web.Response:
    return web.json_response(shapes.fault(path, status), status=status)


def _origin(request: web.Request) -> str:
    return str(request.url.origin())


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)
