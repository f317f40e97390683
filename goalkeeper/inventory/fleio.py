"""Who pays for each OpenStack project, read from the Fleio staff API over aiohttp.

Three paged listings read side by side (`/openstack/projects`, `/billing/services`, `/clients`)
join a project to its client: a handful of requests per refresh whatever the size of the cloud,
never one per address or project. A project billing does not know has no owner here (its
findings go to ops as NOT FOUND). It only reads from Fleio, and the token never appears in an
exception or a log line.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import aiohttp
import structlog

from goalkeeper.config import FleioSettings
from goalkeeper.mailaddress import customer_owner
from goalkeeper.model import Owner

log = structlog.get_logger(__name__)


class FleioError(Exception):
    """Fleio could not be read. The message names the listing that failed, never the token."""


@dataclass(frozen=True, slots=True)
class BillingDirectory:
    """One read of Fleio: the owner of each project it resolved, and how many it listed."""

    owners: Mapping[str, Owner]
    projects_listed: int


class FleioClient:
    """Owner lookups against one Fleio staff API. Give it a session to share connections."""

    def __init__(
        self,
        settings: FleioSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        if settings.url is None or settings.token is None:
            raise ValueError(
                "Fleio needs inventory.fleio.url and GOALKEEPER_INVENTORY__FLEIO__TOKEN"
            )
        self.url = settings.url.rstrip("/")
        self.page_size = settings.page_size
        self._headers = {
            "Authorization": f"Token {settings.token.get_secret_value()}",
            "Accept": "application/json",
        }
        self._ssl = settings.verify_tls  # False: accept any certificate (a lab Fleio)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout or settings.timeout)

    def __repr__(self) -> str:
        return f"FleioClient(url={self.url!r})"

    async def read(self) -> BillingDirectory:
        """The owners billing resolves, with the count of projects it listed at all."""
        if self._session is not None:
            return await self._read(self._session)
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            return await self._read(session)

    async def _read(self, session: aiohttp.ClientSession) -> BillingDirectory:
        try:
            async with asyncio.TaskGroup() as group:
                projects = group.create_task(self._listing(session, "/openstack/projects"))
                services = group.create_task(self._listing(session, "/billing/services"))
                clients = group.create_task(self._listing(session, "/clients"))
        except* FleioError as failed:
            raise FleioError("; ".join(str(err) for err in failed.exceptions)) from None
        owners = join_billing(projects.result(), services.result(), clients.result())
        log.info(
            "fleio owners read",
            projects=len(projects.result()),
            services=len(services.result()),
            clients=len(clients.result()),
            owners=len(owners),
        )
        return BillingDirectory(MappingProxyType(owners), projects_listed=len(projects.result()))

    async def _listing(self, session: aiohttp.ClientSession, path: str) -> list[Mapping[str, Any]]:
        """Every object of one paged listing."""
        try:
            return await self._pages(session, path)
        except FleioError:
            raise
        except TimeoutError:
            raise FleioError(f"Fleio {path}: no answer within {self._timeout.total} s") from None
        except (aiohttp.ClientError, ValueError) as err:
            raise FleioError(f"Fleio {path}: {type(err).__name__}: {err}") from None

    async def _pages(self, session: aiohttp.ClientSession, path: str) -> list[Mapping[str, Any]]:
        # Asks for page 1, 2, ... itself rather than following `next`: Django REST framework
        # builds `next` from the Host header, often wrong behind a TLS proxy. Stops at
        # `next: null`, or at a 404 past the first page.
        objects: list[Mapping[str, Any]] = []
        page, last_page = 1, 1
        while True:
            params = {"page": str(page), "page_size": str(self.page_size)}
            async with session.get(
                self.url + path,
                params=params,
                headers=self._headers,
                ssl=self._ssl,
                timeout=self._timeout,
            ) as response:
                if response.status == 404 and page > 1:
                    break  # the listing shrank while we paged, or `next` lied: it is over
                if response.status in (401, 403):
                    raise FleioError(
                        f"Fleio {path}: the token was refused (HTTP {response.status}); "
                        "check GOALKEEPER_INVENTORY__FLEIO__TOKEN"
                    )
                if response.status != 200:
                    raise FleioError(f"Fleio {path} page {page}: HTTP {response.status}")
                body = await response.json()
            items = body.get("objects") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise FleioError(f"Fleio {path} page {page}: not a Fleio list envelope")
            objects.extend(item for item in items if isinstance(item, dict))
            if not body.get("next") or not items:
                break
            if page == 1:
                count = body.get("count")
                per_page = len(items)
                last_page = math.ceil(count / per_page) if isinstance(count, int) else 1
            # One page past the count is allowed (a listing may grow while being read);
            # more than that means the server ignores `page` and would loop us forever.
            if page > last_page:
                raise FleioError(f"Fleio {path}: paging did not end after {page} pages")
            page += 1
        return objects


def reference_id(value: object) -> str | None:
    """The id a Fleio reference names, whether written bare (`8453`) or nested (`{"id": 8453,
    ...}`); None for null, a missing id, or anything that is not a reference (a bool, a list).

    Fleio's StaffServiceSerializer nests a service's `client` (`{"id", "name",
    "external_billing_id"}`), while a project's `service` is a bare id: taking either shape
    keeps the join working on a Fleio that nests one field more or fewer.
    """
    if isinstance(value, Mapping):
        value = value.get("id")
    if isinstance(value, bool):  # bool is an int to Python, never an id to Fleio
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def join_billing(
    projects: Sequence[Mapping[str, Any]],
    services: Sequence[Mapping[str, Any]],
    clients: Sequence[Mapping[str, Any]],
) -> dict[str, Owner]:
    """Keystone project id -> owner, through project.service -> service.client -> client."""
    client_by_id = {key: c for c in clients if (key := reference_id(c.get("id"))) is not None}
    client_of_service = {
        key: client
        for s in services
        if (key := reference_id(s.get("id"))) is not None
        and (client := reference_id(s.get("client"))) is not None
    }
    owners: dict[str, Owner] = {}
    for project in projects:
        project_id = project.get("project_id")
        service_id = reference_id(project.get("service"))
        client_id = client_of_service.get(service_id) if service_id is not None else None
        found = client_by_id.get(client_id) if client_id is not None else None
        if isinstance(project_id, str) and project_id and found is not None:
            owners[project_id] = _owner(found)
    return owners


def _owner(client: Mapping[str, Any]) -> Owner:
    first, last, company = (
        _text(client.get(key)) for key in ("first_name", "last_name", "company")
    )
    full_name = f"{first or ''} {last or ''}".strip()
    return customer_owner(
        company or full_name or _text(client.get("name")),
        _text(client.get("email")),
        reference_id(client.get("id")),
    )


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
