"""The billing side of the inventory, through the real aiohttp client against the simulator."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pydantic import SecretStr

from goalkeeper.config import FleioSettings
from goalkeeper.inventory.fleio import FleioClient, FleioError, join_billing, reference_id
from goalkeeper.model import UNKNOWN_OWNER, Owner
from goalkeeper_sim.cloud import SimulatedCloud
from goalkeeper_sim.faults import STALL
from goalkeeper_sim.fleio import API_ROOT
from goalkeeper_sim.world import World, build_world
from tests.daemon_process import free_port as unused_port

LISTINGS = (
    f"{API_ROOT}/openstack/projects",
    f"{API_ROOT}/billing/services",
    f"{API_ROOT}/clients",
)


@pytest.fixture
def world() -> World:
    return build_world(31, projects=12, servers_per_project=1, unknown_project_share=0.25)


@pytest.fixture
async def cloud(world: World) -> AsyncIterator[SimulatedCloud]:
    async with SimulatedCloud(world, listeners=False) as sim:
        yield sim


def _client(
    cloud: SimulatedCloud, *, page_size: int = 500, token: str | None = None
) -> FleioClient:
    settings = FleioSettings(
        url=cloud.fleio_url, token=SecretStr(token or cloud.fleio_token), page_size=page_size
    )
    return FleioClient(settings, timeout=10)


async def owners_of(client: FleioClient, world: World) -> dict[str, Owner]:
    """The owner of each project of `world`; UNKNOWN_OWNER (NOT FOUND) where billing lacks one."""
    known = (await client.read()).owners
    return {p.id: known.get(p.id, UNKNOWN_OWNER) for p in world.projects}


async def test_owners_resolve_project_to_client_and_unknown_is_not_found(
    cloud: SimulatedCloud, world: World
) -> None:
    owners = await owners_of(_client(cloud), world)
    unknown = [p.id for p in world.projects if p.service_id is None]
    assert len(unknown) == 3
    for project in world.projects:
        client = world.client_of(project.id)
        if client is None:
            assert owners[project.id] is UNKNOWN_OWNER
            assert owners[project.id].email is None
        else:
            assert owners[project.id] == Owner(client.company, client.email, str(client.id))
    for path in LISTINGS:  # one page each at page_size 500
        assert cloud.fleio.requests[path] == 1


async def test_small_pages_cost_one_request_per_page_and_nothing_per_project(
    cloud: SimulatedCloud, world: World
) -> None:
    directory = (await _client(cloud, page_size=2).read()).owners
    assert set(directory) == {p.id for p in world.projects if p.service_id is not None}
    sizes = {
        f"{API_ROOT}/openstack/projects": len(directory),
        f"{API_ROOT}/billing/services": len(world.services),
        f"{API_ROOT}/clients": len(world.clients),
    }
    assert dict(cloud.fleio.requests) == {path: math.ceil(n / 2) for path, n in sizes.items()}


async def test_a_404_past_the_last_page_ends_paging(cloud: SimulatedCloud, world: World) -> None:
    cloud.fleio.stale_next = True  # every last page still links to one more, which is a 404
    owners = await owners_of(_client(cloud, page_size=5), world)
    assert sum(owner.known for owner in owners.values()) == 9
    assert cloud.fleio.requests[f"{API_ROOT}/openstack/projects"] == math.ceil(9 / 5) + 1


async def test_a_refused_token_is_a_clear_error_without_the_token(cloud: SimulatedCloud) -> None:
    wrong = "f" * 40
    client = _client(cloud, token=wrong)
    with pytest.raises(FleioError, match=r"token was refused \(HTTP 401\)") as caught:
        await client.read()
    assert wrong not in str(caught.value)
    assert wrong not in repr(client)


async def test_a_failing_listing_is_named(cloud: SimulatedCloud) -> None:
    cloud.fleio.faults[f"{API_ROOT}/clients"] = 500
    with pytest.raises(FleioError, match=r"Fleio /clients page 1: HTTP 500"):
        await _client(cloud).read()


async def test_a_fleio_that_does_not_answer_times_out(cloud: SimulatedCloud) -> None:
    cloud.fleio.faults[f"{API_ROOT}/billing/services"] = STALL
    settings = FleioSettings(url=cloud.fleio_url, token=SecretStr(cloud.fleio_token))
    with pytest.raises(FleioError, match=r"/billing/services: no answer within 0.5 s"):
        await FleioClient(settings, timeout=0.5).read()


async def test_a_404_on_the_first_page_is_an_error_not_an_empty_listing(
    cloud: SimulatedCloud,
) -> None:
    settings = FleioSettings(url=cloud.fleio_url + "/wrong", token=SecretStr(cloud.fleio_token))
    with pytest.raises(FleioError, match="HTTP 404"):
        await FleioClient(settings, timeout=10).read()


async def test_a_server_that_ignores_page_cannot_loop_us_forever(
    free_port: int,
) -> None:
    async def always_page_one(request: web.Request) -> web.Response:
        body = {"count": 2, "next": "more", "previous": None, "objects": [{"id": 1}]}
        return web.json_response(body | {"totalCount": 2, "pageNo": 1})

    app = web.Application()
    app.router.add_get("/api/{tail:.*}", always_page_one)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", free_port).start()
    try:
        settings = FleioSettings(url=f"http://127.0.0.1:{free_port}/api", token=SecretStr("k"))
        with pytest.raises(FleioError, match="paging did not end"):
            await FleioClient(settings, timeout=10).read()
    finally:
        await runner.cleanup()


async def test_an_unreachable_fleio_is_an_error(free_port: int) -> None:
    settings = FleioSettings(url=f"http://127.0.0.1:{free_port}", token=SecretStr("k"))
    with pytest.raises(FleioError, match="/openstack/projects"):
        await FleioClient(settings, timeout=10).read()


# What Fleio may write where it refers to another object: a bare id (int, or a string id), or
# the nested object its serializers write (StaffServiceSerializer), or something that is no
# reference.
NESTED = [
    ("bare int", 8453, "8453"),
    ("bare string", "8453", "8453"),
    ("string with spaces", " 8453 ", "8453"),
    ("Keystone id", "9a1b2c3d4e5f", "9a1b2c3d4e5f"),
    ("client object", {"id": 8453, "name": "ACME Ltd", "external_billing_id": None}, "8453"),
    ("floating IP client", {"id": 8453, "name": "ACME Ltd"}, "8453"),
    ("product object", {"id": 8453, "name": "OpenStack", "description": ""}, "8453"),
    ("object with string id", {"id": "8453"}, "8453"),
    ("null", None, None),
    ("empty string", "", None),
    ("blank string", "   ", None),
    ("object without id", {"name": "ACME Ltd"}, None),
    ("object with null id", {"id": None, "name": "ACME Ltd"}, None),
    ("object nested twice", {"id": {"id": 8453}}, None),
    ("true", True, None),
    ("false", False, None),
    ("float", 8453.0, None),
    ("list", [8453], None),
]
FIELDS = ("client", "service", "project", "product")


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(("case", "value", "expected"), NESTED, ids=[c[0] for c in NESTED])
def test_a_reference_is_an_id_or_an_object_and_anything_else_is_none(
    field: str, case: str, value: object, expected: str | None
) -> None:
    obj: dict[str, object] = {"id": 1, field: value}
    assert reference_id(obj.get(field)) == expected
    assert reference_id({"id": 1}.get(field)) is None  # the field missing altogether


CLIENT = {"id": 8453, "first_name": "Ada", "last_name": "L", "company": "ACME Ltd",
          "email": "admin@acme.example"}  # fmt: skip
ACME = Owner("ACME Ltd", "admin@acme.example", "8453")


@pytest.mark.parametrize(("case", "value", "expected"), NESTED, ids=[c[0] for c in NESTED])
def test_service_client_in_any_shape_joins_or_is_not_found(
    case: str, value: object, expected: str | None
) -> None:
    clients = [CLIENT, CLIENT | {"id": "9a1b2c3d4e5f"}]
    projects = [{"id": 1, "project_id": "p-1", "service": 77}]
    services = [{"id": 77, "client": value, "product": {"id": 1, "name": "OpenStack"}}]
    owners = join_billing(projects, services, clients)
    if expected is None:
        assert owners == {}  # NOT FOUND, not a crash
    else:
        assert owners == {"p-1": Owner("ACME Ltd", "admin@acme.example", expected)}


@pytest.mark.parametrize(("case", "value", "expected"), NESTED, ids=[c[0] for c in NESTED])
def test_project_service_in_any_shape_joins_or_is_not_found(
    case: str, value: object, expected: str | None
) -> None:
    projects = [{"id": 1, "project_id": "p-1", "service": value}]
    services = [{"id": expected, "client": {"id": 8453, "name": "ACME Ltd"}}]
    owners = join_billing(projects, services, [CLIENT])
    assert owners == ({"p-1": ACME} if expected is not None else {})


@pytest.mark.parametrize(
    ("case", "projects", "services", "clients"),
    [
        ("project id missing", [{"service": 77}], [{"id": 77, "client": 8453}], [CLIENT]),
        ("project id not text", [{"project_id": 5, "service": 77}], [{"id": 77, "client": 8453}],
         [CLIENT]),
        ("service missing", [{"project_id": "p-1"}], [{"id": 77, "client": 8453}], [CLIENT]),
        ("service unknown", [{"project_id": "p-1", "service": 78}], [{"id": 77, "client": 8453}],
         [CLIENT]),
        ("service without id", [{"project_id": "p-1", "service": 77}], [{"client": 8453}],
         [CLIENT]),
        ("client unknown", [{"project_id": "p-1", "service": 77}], [{"id": 77, "client": 9}],
         [CLIENT]),
        ("client without id", [{"project_id": "p-1", "service": 77}], [{"id": 77, "client": 8453}],
         [CLIENT | {"id": None}]),
    ],
)  # fmt: skip
def test_a_broken_chain_is_not_found(
    case: str,
    projects: list[dict[str, object]],
    services: list[dict[str, object]],
    clients: list[dict[str, object]],
) -> None:
    assert join_billing(projects, services, clients) == {}


def test_garbage_client_fields_give_an_owner_without_a_usable_address() -> None:
    client = {"id": 8453, "first_name": 7, "last_name": None, "company": ["x"], "email": {"a": 1},
              "name": "Ada Lovelace"}  # fmt: skip
    projects = [{"project_id": "p-1", "service": 77}]
    owners = join_billing(projects, [{"id": 77, "client": {"id": 8453}}], [client])
    assert owners == {"p-1": Owner("Ada Lovelace", None, "8453")}
    assert not owners["p-1"].known  # NOT FOUND: nobody to mail


async def test_the_simulator_nests_the_client_and_the_reader_still_joins(
    cloud: SimulatedCloud, world: World
) -> None:
    # The simulator writes what Fleio writes: service.client = {id, name, external_billing_id}
    # (tests/test_sim.py checks the shapes).
    directory = await _client(cloud).read()
    assert directory.projects_listed == 9
    assert len(directory.owners) == 9
    assert all(owner.known for owner in directory.owners.values())


def test_url_and_token_are_required() -> None:
    with pytest.raises(ValueError, match="GOALKEEPER_INVENTORY__FLEIO__TOKEN"):
        FleioClient(FleioSettings(url="http://127.0.0.1:1"))


@pytest.fixture
def free_port() -> int:
    return unused_port()
