"""OpenStack joined with Fleio, cached: the inventory the daemon actually reads."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from goalkeeper.config import FleioSettings, InventorySettings, OpenStackSettings
from goalkeeper.inventory.cloud import CloudInventory, InventoryUnavailable
from goalkeeper.model import InventorySource, OwnerLookupState
from goalkeeper_sim.cloud import SimulatedCloud
from goalkeeper_sim.world import World, build_world, move_floating_ip
from tests.openstack_env import use_os_environment

T0 = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
NOVA = "/compute/v2.1/servers/detail"
NEUTRON_PORTS = "/network/v2.0/ports"


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings_for(cloud: SimulatedCloud, *, fleio_page_size: int = 500) -> InventorySettings:
    return InventorySettings(
        openstack=OpenStackSettings(api_timeout=10),
        fleio=FleioSettings(
            url=cloud.fleio_url, token=SecretStr(cloud.fleio_token), page_size=fleio_page_size
        ),
    )


@pytest.fixture
def world() -> World:
    return build_world(41, projects=6, servers_per_project=4, unknown_project_share=0.2)


@pytest.fixture
async def cloud(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[SimulatedCloud]:
    async with SimulatedCloud(world, page_size=5, listeners=False) as sim:
        use_os_environment(monkeypatch, sim.os_env(), tmp_path)
        yield sim


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def inventory(cloud: SimulatedCloud, clock: FakeClock) -> AsyncIterator[CloudInventory]:
    source = CloudInventory(settings_for(cloud), clock=clock)
    yield source
    await source.aclose()


async def test_targets_carry_their_billing_owner(inventory: CloudInventory, world: World) -> None:
    source: InventorySource = inventory
    result = await source.fetch()
    assert result.fetched_at == T0
    assert result.stale_reason is None
    assert {t.address for t in result.targets} == set(world.inventory_addresses())
    not_found = {t.project_id for t in result.targets if t.owner.email is None}
    assert not_found  # a project billing does not know: NOT FOUND, for ops
    for target in result.targets:
        client = world.client_of(target.project_id)
        assert target.owner.email == (client.email if client else None)
        assert (target.project_id in not_found) == (client is None)


async def test_a_neutron_failure_falls_back_to_the_last_good_inventory(
    inventory: CloudInventory, cloud: SimulatedCloud, clock: FakeClock
) -> None:
    good = await inventory.fetch()
    cloud.openstack.faults[NEUTRON_PORTS] = 500
    clock.now = T0 + timedelta(hours=2)
    with capture_logs() as logs:
        stale = await inventory.fetch()
    assert stale.targets == good.targets
    assert stale.fetched_at == T0
    assert stale.stale_reason is not None
    assert "listing Neutron ports" in stale.stale_reason
    assert "2 h 0 min old" in stale.stale_reason
    warning = next(e for e in logs if e["log_level"] == "warning")
    assert warning["age_seconds"] == 7200
    assert "Neutron ports" in warning["error"]
    del cloud.openstack.faults[NEUTRON_PORTS]
    fresh = await inventory.fetch()
    assert (fresh.stale_reason, fresh.fetched_at) == (None, clock.now)


async def test_a_fleio_failure_falls_back_too(
    inventory: CloudInventory, cloud: SimulatedCloud, clock: FakeClock
) -> None:
    await inventory.fetch()
    cloud.fleio.faults["/backend/staffapi/billing/services"] = 503
    clock.now = T0 + timedelta(minutes=5)
    stale = await inventory.fetch()
    assert stale.stale_reason is not None
    assert "Fleio /billing/services page 1: HTTP 503" in stale.stale_reason


async def test_with_no_good_inventory_the_fetch_fails_clearly(
    cloud: SimulatedCloud, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_password = "Wr0ng-" + cloud.openstack.password
    monkeypatch.setenv("OS_PASSWORD", wrong_password)
    cloud.fleio.faults["/backend/staffapi/clients"] = 500
    source = CloudInventory(settings_for(cloud), clock=clock)
    with capture_logs() as logs, pytest.raises(InventoryUnavailable) as caught:
        await source.fetch()
    message = str(caught.value)
    assert "authentication refused (HTTP 401)" in message
    assert "Fleio /clients" in message
    assert "no earlier inventory" in message
    for secret in (wrong_password, cloud.openstack.password, cloud.fleio_token):
        assert secret not in message
        assert secret not in repr(logs)
    await source.aclose()


async def test_a_floating_ip_that_moved_goes_to_its_new_owner(
    inventory: CloudInventory, cloud: SimulatedCloud, world: World
) -> None:
    before = {t.address: t for t in (await inventory.fetch()).targets}
    address, target = next(
        (f.address, before[f.address])
        for f in world.floating_ips
        if f.address in before and before[f.address].owner.known
    )
    new_server = next(
        s
        for s in world.servers
        if (client := world.client_of(s.project_id)) and client.email != target.owner.email
    )
    cloud.replace_world(move_floating_ip(world, address, new_server.id))
    after = {t.address: t for t in (await inventory.fetch()).targets}
    new_client = world.client_of(new_server.project_id)
    assert new_client is not None
    assert after[address].server_id == new_server.id
    assert after[address].project_id == new_server.project_id
    assert after[address].owner.email == new_client.email != target.owner.email


async def test_a_recent_inventory_is_reused_within_min_age(
    cloud: SimulatedCloud, clock: FakeClock
) -> None:
    source = CloudInventory(settings_for(cloud), clock=clock, min_age=timedelta(minutes=10))
    first = await source.fetch()
    requests = cloud.requests_total
    clock.now = T0 + timedelta(minutes=9)
    assert await source.fetch() is first
    assert cloud.requests_total == requests
    clock.now = T0 + timedelta(minutes=10)
    assert (await source.fetch()).fetched_at == clock.now
    assert cloud.requests_total > requests
    await source.aclose()


async def test_without_fleio_every_owner_is_not_found_and_that_is_an_incident(
    cloud: SimulatedCloud, clock: FakeClock
) -> None:
    settings = InventorySettings(openstack=OpenStackSettings(api_timeout=10))
    source = CloudInventory(settings, clock=clock)
    with capture_logs() as logged:
        result = await source.fetch()
    assert result.targets
    assert all(t.owner.email is None for t in result.targets)
    assert result.owners is not None
    assert result.owners.state is OwnerLookupState.UNCONFIGURED
    assert result.owners.incident
    assert [e for e in logged if e["event"] == "owner lookup incident"]
    await source.aclose()


async def test_owners_off_by_choice_are_not_an_incident(
    cloud: SimulatedCloud, clock: FakeClock
) -> None:
    settings = settings_for(cloud)
    off = settings.model_copy(
        update={"fleio": settings.fleio.model_copy(update={"enabled": False})}
    )
    source = CloudInventory(off, clock=clock)
    result = await source.fetch()
    assert all(t.owner.email is None for t in result.targets)
    assert cloud.fleio.requests == {}  # not asked at all
    assert result.owners is not None
    assert result.owners.state is OwnerLookupState.OFF
    assert not result.owners.incident
    await source.aclose()


async def test_owners_resolved_through_fleios_nested_objects_are_counted(
    cloud: SimulatedCloud, world: World, clock: FakeClock
) -> None:
    source = CloudInventory(settings_for(cloud), clock=clock)
    result = await source.fetch()
    projects = {t.project_id for t in result.targets}
    billed = {p for p in projects if world.client_of(p) is not None}
    assert billed, "the world has billed projects with public addresses"
    assert result.owners is not None
    assert (result.owners.state, result.owners.projects) == (OwnerLookupState.ON, len(projects))
    assert result.owners.resolved == len(billed)
    assert result.owners.listed == sum(1 for p in world.projects if p.service_id is not None)
    assert not result.owners.incident
    assert {t.owner.email for t in result.targets if t.project_id in billed} <= {
        c.email for c in world.clients
    }
    await source.aclose()


@pytest.mark.parametrize(("min_share", "incident"), [(0.5, True), (0.2, False)])
async def test_too_few_owners_resolved_is_an_incident(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, min_share: float, incident: bool
) -> None:
    # Billing knows a third of the projects: a Fleio that is, say, another region's.
    world = build_world(43, projects=6, servers_per_project=2, unknown_project_share=0.67)
    async with SimulatedCloud(world, page_size=5, listeners=False) as sim:
        use_os_environment(monkeypatch, sim.os_env(), tmp_path)
        settings = settings_for(sim)
        fleio = settings.fleio.model_copy(update={"min_resolved_share": min_share})
        source = CloudInventory(settings.model_copy(update={"fleio": fleio}))
        result = await source.fetch()
        await source.aclose()
    assert result.owners is not None
    assert 0 < result.owners.resolved < result.owners.projects / 2
    assert result.owners.incident is incident


async def test_a_fleio_that_resolves_none_of_the_inventorys_projects_is_an_incident(
    cloud: SimulatedCloud, clock: FakeClock
) -> None:
    # Fleio lists projects, but another cloud's: every join misses.
    cloud.fleio.load(build_world(99, projects=6, servers_per_project=1))
    source = CloudInventory(settings_for(cloud), clock=clock)
    result = await source.fetch()
    assert result.owners is not None
    assert result.owners.listed > 0
    assert result.owners.resolved == 0
    assert result.owners.incident
    await source.aclose()


async def _requests_of_one_refresh(
    world: World, page_size: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Counter[str], int]:
    async with SimulatedCloud(world, page_size=page_size, listeners=False) as sim:
        use_os_environment(monkeypatch, sim.os_env(), tmp_path)
        source = CloudInventory(settings_for(sim, fleio_page_size=page_size))
        targets = len((await source.fetch()).targets)
        await source.aclose()
        return sim.openstack.requests + sim.fleio.requests, targets


def _world_of(servers: int) -> World:
    return build_world(51, projects=servers // 10, servers_per_project=10, floating_ip_share=0.8)


async def test_requests_per_refresh_do_not_grow_with_the_cloud(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    few, many = _world_of(10), _world_of(1000)
    small, small_targets = await _requests_of_one_refresh(few, 5000, monkeypatch, tmp_path)
    large, large_targets = await _requests_of_one_refresh(many, 5000, monkeypatch, tmp_path)
    assert small_targets == len(few.inventory_addresses()) and len(few.public_addresses()) == 10
    assert large_targets == len(many.inventory_addresses())
    assert len(many.public_addresses()) == 1000
    assert large == small
    assert sum(large.values()) <= 12  # auth, discovery, five listings, three billing listings


async def test_with_small_pages_requests_grow_only_by_pages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = _world_of(200)
    big, _ = await _requests_of_one_refresh(world, 5000, monkeypatch, tmp_path)
    paged, _ = await _requests_of_one_refresh(world, 10, monkeypatch, tmp_path)
    billed = [p for p in world.projects if p.service_id is not None]
    # OpenStack links to a next page after every full one; Fleio stops at `next: null`.
    expected = {
        NOVA: len(world.servers) // 10 + 1,
        NEUTRON_PORTS: len(world.ports) // 10 + 1,  # all: a floating IP's port names its groups
        "/network/v2.0/floatingips": len(world.floating_ips) // 10 + 1,
        "/network/v2.0/security-groups": len(world.security_groups) // 10 + 1,
        "/backend/staffapi/openstack/projects": math.ceil(len(billed) / 10),
        "/backend/staffapi/billing/services": math.ceil(len(world.services) / 10),
        "/backend/staffapi/clients": math.ceil(len(world.clients) / 10),
    }
    assert {path: paged[path] for path in expected} == expected
    assert all(count > 1 for count in expected.values())
    unpaged = {path: count for path, count in paged.items() if path not in expected}
    assert unpaged == {path: count for path, count in big.items() if path not in expected}
