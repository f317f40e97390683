"""Every region in one run: the simulated cloud's two regions read through openstacksdk.

The simulator serves RegionOne and RegionTwo (two Nova and Neutron endpoints in one Keystone
catalog, goalkeeper_sim.regions); a customer with servers in both gets one report naming each
server's region, and a region that cannot be read is named with the reason while the other is
scanned and mailed as usual. The per-region last good copy is tested on CloudInventory itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import pytest

from goalkeeper.config import InventorySettings, OpenStackSettings
from goalkeeper.inventory.cloud import CloudInventory, InventoryUnavailable
from goalkeeper.inventory.openstack import OpenStackError, OpenStackInventory
from goalkeeper.metrics import Metrics
from goalkeeper.model import AddressesKnown, Target
from goalkeeper.notify.summary import render_summary
from goalkeeper_sim.cloud import SimulatedCloud
from goalkeeper_sim.demo import sim_tick
from goalkeeper_sim.regions import SECOND_REGION, regional_world
from goalkeeper_sim.world import build_world

REGIONS = {"inventory": {"openstack": {"regions": ["RegionOne", SECOND_REGION]}}}
# Both regions' loopback ranges; their fd00:: addresses are planned and excluded, as in the demo
# (reachable only inside a namespace: tests/test_ipv6_netns.py scans IPv6).
BOTH_ALLOWED = {
    "scan": {
        "allowed_networks": ["127.64.0.0/14", "127.68.0.0/16", "fd00::/8"],
        "exclude": ["fd00::/8"],
    }
}


async def test_one_customer_gets_one_report_naming_servers_in_both_regions(tmp_path: Path) -> None:
    first = build_world(5, projects=4, servers_per_project=4, unknown_project_share=0)
    second = regional_world(first, seed=6)
    tick = await sim_tick(
        first, tmp_path, regions={SECOND_REGION: second}, overrides={**REGIONS, **BOTH_ALLOWED}
    )
    report = tick.report
    assert report.regions_down == {}
    expected = {
        "RegionOne": len(first.public_addresses()),
        SECOND_REGION: len(second.public_addresses()),
    }
    assert dict(report.targets_by_region) == expected
    regions_of = {f.target.region for f in report.findings}
    assert regions_of == {"RegionOne", SECOND_REGION}
    # Some owner has open ports in both regions: exactly one mail to them names both.
    by_owner: dict[str, set[str]] = {}
    for finding in report.findings:
        if finding.owner.mail_key:
            by_owner.setdefault(finding.owner.mail_key, set()).add(finding.target.region)
    spanning = sorted(owner for owner, regions in by_owner.items() if len(regions) == 2)
    assert spanning, "seeds 5 and 6 give an owner open ports in both regions"
    owner = spanning[0]
    mails = [m for m in tick.smtp.messages if owner in m.rcpt_tos]
    assert len(mails) == 1
    body = mails[0].message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "region RegionOne" in text and f"region {SECOND_REGION}" in text
    summary = render_summary(report)
    assert f"By region: RegionOne {expected['RegionOne']}, {SECOND_REGION} " in summary


async def test_a_region_that_is_down_is_named_and_the_other_is_scanned(tmp_path: Path) -> None:
    first = build_world(5, projects=4, servers_per_project=4, unknown_project_share=0)
    second = regional_world(first, seed=6)
    original = SimulatedCloud.start

    async def second_region_down(self: SimulatedCloud) -> None:
        await original(self)
        self.regions[SECOND_REGION].faults.update({"/compute/v2.1/servers/detail": 503})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SimulatedCloud, "start", second_region_down)
        tick = await sim_tick(
            first, tmp_path, regions={SECOND_REGION: second}, overrides={**REGIONS, **BOTH_ALLOWED}
        )
    report = tick.report
    (why,) = report.regions_down.values()
    assert list(report.regions_down) == [SECOND_REGION]
    assert "OpenStack (region RegionTwo) failed while" in why
    assert "no earlier copy of region RegionTwo: its servers are not scanned" in why
    assert dict(report.targets_by_region) == {"RegionOne": len(first.public_addresses())}
    assert report.hosts_scanned == len(first.public_addresses())
    assert report.mails, "RegionOne's customers are mailed as usual"
    summary = render_summary(report)
    assert f"Region {SECOND_REGION} not read" in summary
    metrics = Metrics()
    metrics.set_regions(report.targets_by_region, report.regions_down)
    registry = metrics.registry
    assert registry.get_sample_value("goalkeeper_region_up", {"region": SECOND_REGION}) == 0
    assert registry.get_sample_value("goalkeeper_region_up", {"region": "RegionOne"}) == 1


class Region(OpenStackInventory):
    """One region's reader that answers with `targets`, or fails while `down`."""

    def __init__(self, name: str, targets: tuple[Target, ...]) -> None:
        super().__init__(OpenStackSettings(), region=name)
        self.answer = targets
        self.down = False

    async def targets(self, on_addresses: AddressesKnown | None = None) -> tuple[Target, ...]:
        if self.down:
            raise OpenStackError(f"OpenStack (region {self.region}) failed while listing ports")
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_region_failing_later_is_read_from_its_own_last_good_copy() -> None:
    one = Region("RegionOne", (Target(ip_address("127.64.0.1"), region="RegionOne"),))
    two = Region("RegionTwo", (Target(ip_address("127.68.0.1"), region="RegionTwo"),))
    clock = Clock()
    settings = InventorySettings.model_validate({"fleio": {"enabled": False}})
    cloud = CloudInventory(settings, regions={"RegionOne": one, "RegionTwo": two}, clock=clock)
    good = await cloud.fetch()
    assert [t.region for t in good.targets] == ["RegionOne", "RegionTwo"]

    two.down = True
    one.answer = (*one.answer, Target(ip_address("127.64.0.2"), region="RegionOne"))
    clock.now += timedelta(hours=24)
    later = await cloud.fetch()
    assert [str(t.address) for t in later.targets] == ["127.64.0.1", "127.64.0.2", "127.68.0.1"]
    assert later.stale_reason is None  # RegionOne is fresh
    why = later.regions_down["RegionTwo"]
    assert why.startswith("OpenStack (region RegionTwo) failed while listing ports; ")
    assert "region RegionTwo's targets are from 2026-12-02T06:00:00+00:00 (24 h 0 min old)" in why

    one.down = True  # every region down: the whole last good inventory, each region named
    stale = await cloud.fetch()
    assert stale.stale_reason is not None
    assert set(stale.regions_down) == {"RegionOne", "RegionTwo"}
    assert [str(t.address) for t in stale.targets] == [str(t.address) for t in later.targets]


async def test_every_region_down_with_no_copy_is_unavailable() -> None:
    one = Region("RegionOne", ())
    one.down = True
    settings = InventorySettings.model_validate({"fleio": {"enabled": False}})
    with pytest.raises(InventoryUnavailable, match="region RegionOne"):
        await CloudInventory(settings, regions={"RegionOne": one}).fetch()


@pytest.mark.parametrize(
    ("openstack", "problem"),
    [
        ({"regions": ["RegionOne", "RegionOne"]}, "a region is listed twice"),
        ({"regions": [" "]}, "a region name must not be empty"),
        ({"regions": ["A"], "region": "B"}, "region 'B' is not in regions ['A']"),
    ],
)
def test_bad_regions_are_refused_naming_why(openstack: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        OpenStackSettings.model_validate(openstack)


def test_regions_default_to_the_clouds_own() -> None:
    assert OpenStackSettings().region_names == (None,)
    assert OpenStackSettings(region="R1").region_names == ("R1",)
    assert OpenStackSettings(regions=("R1", "R2")).region_names == ("R1", "R2")
