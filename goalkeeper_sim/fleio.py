"""A fake Fleio staff API serving a simulated World's billing side over aiohttp.

It answers the few listings Goalkeeper reads: `/clients`, `/clients/<id>`,
`/openstack/projects`, `/billing/services`, `/billing/services/<id>`, `/openstack/floatingips`,
with Fleio's list envelope `{count, next, previous, objects, totalCount, pageNo}`, `page` and
`page_size` parameters (clamped to a maximum, as Django REST framework does), 404 past the last
page, `Authorization: Token <key>` (anything else gets 401) and no trailing slashes. Projects
that the world marks unknown to billing are simply absent, as they would be in Fleio.

The objects have the shapes Fleio's own serializers give them, nested objects included (a
service's `client` is `{id, name, external_billing_id}`, not a bare id): each builder below
names the serializer it follows, from Fleio's source (the `fleio` and `fleiostaff` packages).

Every request is counted by path; tests make a path fail with `faults`, and `stale_next` makes
every last page still link to a next one, as a listing that shrank while being paged does. It is
a test double: read-only, one staff token. The daemon never imports it.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from aiohttp import web

from goalkeeper_sim.faults import Faults, Handler
from goalkeeper_sim.world import Client, FloatingIp, Network, World

Json = dict[str, Any]
API_ROOT = "/backend/staffapi"
_STAMP = "2024-01-01T00:00:00Z"


class FleioSim(Faults):
    """The staff API at /backend/staffapi."""

    def __init__(
        self, world: World, *, default_page_size: int = 20, max_page_size: int = 1000
    ) -> None:
        super().__init__()
        self.token = secrets.token_hex(20)  # Fleio's keys are 40 hex digits, like DRF's
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.stale_next = False
        self.load(world)

    def load(self, world: World) -> None:
        """Serve `world` from now on; it is rendered and indexed here, once, not per request."""
        self.world = world
        services = {service.id: service for service in world.services}
        clients = {client.id: client for client in world.clients}
        client_of_project = {s.project_id: clients[s.client_id] for s in world.services}
        projects = [p for p in world.projects if p.service_id in services]
        networks = {network.id: network for network in world.networks}
        self._collections: dict[str, list[Json]] = {
            "clients": [_client(c) for c in world.clients],
            "openstack/projects": [
                _project(p.fleio_id, p.id, p.name, p.service_id) for p in projects
            ],
            "billing/services": [
                _service(s.id, clients[s.client_id], s.project_id) for s in world.services
            ],
            "openstack/floatingips": [
                _floating_ip(fip, client_of_project.get(fip.project_id), networks[fip.network_id])
                for fip in world.floating_ips
            ],
        }
        self._by_id = {
            name: {str(item["id"]): item for item in items}
            for name, items in self._collections.items()
        }

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for name in self._collections:
            app.router.add_get(f"{API_ROOT}/{name}", self._list)
        for name in ("clients", "billing/services"):
            app.router.add_get(f"{API_ROOT}/{name}/{{id}}", self._detail)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Token" or not key:
            return _detail(401, "Authentication credentials were not provided.")
        if not secrets.compare_digest(key.encode(), self.token.encode()):
            return _detail(401, "Invalid token.")
        if (status := await self.injected(request.path)) is not None:
            return _detail(status, "Injected fault.")
        return await handler(request)

    async def _list(self, request: web.Request) -> web.Response:
        items = self._collections[request.path.removeprefix(API_ROOT + "/")]
        try:
            page = int(request.query.get("page", "1"))
            size = int(request.query.get("page_size", self.default_page_size))
        except ValueError:
            return _detail(404, "Invalid page.")
        size = max(1, min(size, self.max_page_size))
        pages = max(1, math.ceil(len(items) / size))
        if not 1 <= page <= pages:
            return _detail(404, "Invalid page.")
        more = page < pages or self.stale_next
        return web.json_response(
            {
                "count": len(items),
                "totalCount": len(items),
                "pageNo": page,
                "next": _page_url(request, page + 1) if more else None,
                "previous": _page_url(request, page - 1) if page > 1 else None,
                "objects": items[(page - 1) * size : page * size],
            }
        )

    async def _detail(self, request: web.Request) -> web.Response:
        name = request.path.removeprefix(API_ROOT + "/").rsplit("/", 1)[0]
        item = self._by_id[name].get(request.match_info["id"])
        if item is None:
            return _detail(404, "Not found.")
        return web.json_response(item)


def _detail(status: int, message: str) -> web.Response:
    return web.json_response({"detail": message}, status=status)


def _page_url(request: web.Request, page: int) -> str:
    return str(request.url.update_query(page=str(page)))


def _name(client: Client) -> str:
    # Fleio's Client.name: the person's name; `long_name` adds the company.
    return f"{client.first_name} {client.last_name}"


def _client(client: Client) -> Json:
    # fleiostaff/core/clients/serializers.py, StaffClientBriefSerializer (the list's fields).
    return {
        "id": client.id,
        "name": _name(client),
        "first_name": client.first_name,
        "last_name": client.last_name,
        "company": client.company,
        "long_name": f"{_name(client)} ({client.company})" if client.company else _name(client),
        "email": client.email,
        "phone": "",
        "address1": "1 Example Street",
        "city": "Example City",
        "country": "NL",
        "country_name": "Netherlands",
        "state": "",
        "zip_code": "1000 AA",
        "vat_id": None,
        "currency": "EUR",
        "status": "active",
        "date_created": _STAMP,
        "uptodate_credit": "0.00",
        "suspend_instead_of_terminate": False,
        "configuration_name": "default",
        "group_name": "",
        "outofcredit_datetime": None,
        "reseller_client_details": None,
    }


def _project(fleio_id: int, project_id: str, name: str, service_id: int | None) -> Json:
    # fleiostaff/openstack/projects/serializers.py, StaffProjectSerializers: fields '__all__' of
    # fleio/openstack/models/project.py, so `service` (a OneToOneField) is the service's bare id.
    return {
        "id": fleio_id,
        "service": service_id,
        "project_id": project_id,
        "project_domain_id": "default",
        "deleted": False,
        "disabled": False,
        "fleio_disabled_reason": None,
        "extras": {},
        "sync_version": 0,
        "is_domain": False,
        "name": name,
        "description": "",
        "created_at": _STAMP,
        "updated_at": _STAMP,
        "services_count": 1 if service_id is not None else 0,
    }


def _service(service_id: int, client: Client, project_id: str) -> Json:
    # fleiostaff/billing/services/serializers.py, StaffServiceSerializer: `client` is
    # ClientWithExternalBillingMinSerializer (fleio/core/clients/serializers.py: id, name,
    # external_billing_id), `product` StaffProductBriefSerializer (id, name, description),
    # `cycle` StaffProductCycleBriefSerializer (id, display_name); the rest is the model's.
    return {
        "id": service_id,
        "client": {"id": client.id, "name": _name(client), "external_billing_id": None},
        "cycle": {"id": 1, "display_name": "1 month"},
        "product": {"id": 1, "name": "OpenStack", "description": "Public cloud project"},
        "order": None,
        "configurable_options": [],
        "display_name": f"OpenStack project {project_id[:8]}",
        "status": "active",
        "created_at": _STAMP,
        "activated_at": _STAMP,
        "next_due_date": None,
        "next_invoice_date": None,
        "external_billing_id": None,
        "override_price": None,
        "is_free": False,
        "notes": "",
    }


def _floating_ip(fip: FloatingIp, client: Client | None, network: Network) -> Json:
    # fleiostaff/openstack/floatingips/serializers.py, StaffFloatingIpSerializer: `client` is
    # ClientMinSerializer (id, name) of project.service.client, null without one; network, port
    # and router are small objects; `project` is a ForeignKey to_field='project_id'
    # (fleio/openstack/models/floating_ip.py), so the bare Keystone id.
    return {
        "id": fip.id,
        "client": {"id": client.id, "name": _name(client)} if client is not None else None,
        "floating_network": {"id": network.id, "name": network.name, "region": "RegionOne"},
        "port": {"id": fip.port_id, "name": ""} if fip.port_id else None,
        "router": None,
        "associated_object": None,
        "floating_ip_address": str(fip.address),
        "fixed_ip_address": str(fip.fixed_address) if fip.fixed_address else None,
        "project": fip.project_id,
        "status": "ACTIVE" if fip.port_id else "DOWN",
        "description": "",
        "created_at": _STAMP,
        "updated_at": _STAMP,
    }
