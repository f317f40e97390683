"""The tick's overlap of inventory and scan, with a fake source and scanner at the seams.

An inventory that announces its addresses early (OpenStack's, from Neutron, while Nova pages)
has them scanned before it is done; what it then holds beyond them is scanned afterwards, and
what it no longer holds is dropped. A source that fails after announcing stops the early scan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from goalkeeper import compose
from goalkeeper.config import Settings
from goalkeeper.firewall import PortFirewall, SecurityGroup, SecurityGroupRule
from goalkeeper.metrics import Metrics
from goalkeeper.model import (
    AddressesKnown,
    Inventory,
    IPAddress,
    OpenPort,
    OutgoingMail,
    Owner,
    OwnerLookup,
    OwnerLookupState,
    PortSpec,
    ScanResult,
    Target,
    Transport,
)
from goalkeeper.notify.render import render_owner_report
from goalkeeper.notify.summary import render_summary
from goalkeeper.pipeline import run_tick
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.state import MESSAGE_CHUNK, NewMessage, OutboxMessage, OutboxWriter, StateStore
from goalkeeper.views import record_as_dict, report_as_dict

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
A, B, GONE, NEW = (IPv4Address(f"127.46.0.{n}") for n in (1, 2, 3, 4))
OUTSIDE = IPv4Address("127.99.0.1")  # not in scan.allowed_networks: never scanned


def target(address: IPAddress) -> Target:
    owner = Owner(name="Alice", email="alice@customer.example")
    return Target(address, f"srv-{address}", "id", "p1", "acme", owner)


class Announcing:
    """Announces `announce` from another thread, then holds its inventory back until the
    scanner has started: a tick that scanned only afterwards would wait here and fail."""

    def __init__(self, announce: set[IPAddress], holds: set[IPAddress], scanning: asyncio.Event):
        self.announce, self.holds, self.scanning = frozenset(announce), holds, scanning

    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory:
        assert on_addresses is not None
        await asyncio.to_thread(on_addresses, self.announce)
        await asyncio.wait_for(self.scanning.wait(), timeout=10)
        targets = tuple(target(a) for a in sorted(self.holds, key=lambda a: (a.version, int(a))))
        return Inventory(targets=targets, fetched_at=NOW, source="fake")


class FailingAfterAnnouncing(Announcing):
    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory:
        assert on_addresses is not None
        on_addresses(self.announce)
        await asyncio.wait_for(self.scanning.wait(), timeout=10)
        raise RuntimeError("Fleio went away")


class Recording:
    """Finds port 6379 open on every address; `hang` keeps a scan going until cancelled."""

    def __init__(self, *, hang: bool = False) -> None:
        self.calls: list[list[IPAddress]] = []
        self.started = asyncio.Event()
        self.cancelled = False
        self.hang = hang

    async def scan(self, addresses: Sequence[IPAddress], ports: Sequence[PortSpec]) -> ScanResult:
        self.calls.append(list(addresses))
        self.started.set()
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return ScanResult(
            scanned=frozenset(addresses),
            open_ports=tuple(OpenPort(a, 6379, Transport.TCP, "open (syn-ack)") for a in addresses),
            nmap_runs=1,
        )


class Kept:
    async def submit(self, messages: Sequence[OutboxMessage]) -> dict[int, str | None]:
        return {}  # the daemon's way: queued, not waited for


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await StateStore.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    yield opened
    await opened.aclose()


def settings(*more_allowed: str, egress: Sequence[str] = ()) -> Settings:
    return Settings.model_validate(
        {
            "scan": {
                "ports": [{"port": 6379, "service": "redis"}],
                "allowed_networks": ["127.46.0.0/16", *more_allowed],
                "allow_loopback": True,
                "egress_addresses": list(egress),
            },
            "notify": {"ops_email": "ops@provider.example", "send_to_customers": True},
        }
    )


async def test_announced_addresses_are_scanned_while_the_inventory_is_still_read(
    store: StateStore,
) -> None:
    scanner = Recording()
    inventory = Announcing({A, B, GONE, OUTSIDE}, {A, B, NEW, OUTSIDE}, scanner.started)

    report = await run_tick(
        now=NOW, run_id="r1", settings=settings(), inventory=inventory, scanner=scanner,
        store=store, dispatch=Kept(), catalog=load_catalog(),
    )  # fmt: skip

    # First the announced addresses in scope, then the one the inventory added; never OUTSIDE.
    assert scanner.calls == [[A, B, GONE], [NEW]]
    # GONE left the inventory before it was done: its result is dropped, not reported.
    assert {f.address for f in report.findings} == {A, B, NEW}
    assert report.hosts_scanned == 3
    assert report.targets == 3
    assert report.refused == (str(OUTSIDE),)


async def test_a_source_failing_after_announcing_stops_the_early_scan(store: StateStore) -> None:
    scanner = Recording(hang=True)
    inventory = FailingAfterAnnouncing({A, B}, set(), scanner.started)

    with pytest.raises(RuntimeError, match="Fleio went away"):
        await run_tick(
            now=NOW, run_id="r2", settings=settings(), inventory=inventory, scanner=scanner,
            store=store, dispatch=Kept(), catalog=load_catalog(),
        )  # fmt: skip

    assert scanner.calls == [[A, B]]
    assert scanner.cancelled  # no scan outlives the tick that wanted it
    assert await store.list_findings() == []


class Unresolved:
    """An inventory whose billing resolved nobody: the tick must say so, not only log it."""

    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory:
        lookup = OwnerLookup(OwnerLookupState.ON, projects=1, resolved=0, listed=5)
        unowned = Target(A, "srv", "id", "p1", "acme")
        return Inventory(targets=(unowned,), fetched_at=NOW, source="fake", owners=lookup)


async def test_an_owner_lookup_incident_reaches_the_report_the_summary_and_the_metrics(
    store: StateStore,
) -> None:
    metrics = Metrics()
    report = await run_tick(
        now=NOW, run_id="r3", settings=settings(), inventory=Unresolved(), scanner=Recording(),
        store=store, dispatch=Kept(), catalog=load_catalog(), metrics=metrics,
    )  # fmt: skip
    assert report.owner_lookup is not None
    assert report.owner_lookup.incident
    assert "Owner lookup incident" in render_summary(report)
    assert metrics.registry.get_sample_value("goalkeeper_owner_lookup_incident") == 1
    assert metrics.registry.get_sample_value("goalkeeper_owner_resolved_share") == 0
    lookup = json.loads(json.dumps(report_as_dict(report)))["inventory"]["owner_lookup"]
    assert lookup == {"state": "on", "projects": 1, "resolved": 0, "listed": 5, "share": 0.0,
                      "min_share": 0.5, "incident": True}  # fmt: skip


V6_ALLOWED, V6_OUTSIDE = IPv6Address("fd00:46::1"), IPv6Address("fd00:99::1")


async def test_ipv6_addresses_in_scope_are_scanned_and_the_others_refused(
    store: StateStore,
) -> None:
    scanner = Recording()
    held: set[IPAddress] = {A, V6_ALLOWED, V6_OUTSIDE}
    inventory = Announcing(held, held, scanner.started)
    metrics = Metrics()

    report = await run_tick(
        now=NOW, run_id="r4", settings=settings("fd00:46::/64"), inventory=inventory,
        scanner=scanner, store=store, dispatch=Kept(), catalog=load_catalog(), metrics=metrics,
    )  # fmt: skip

    assert scanner.calls == [[A, V6_ALLOWED]]  # IPv4 first, then IPv6 (scope.in_scope's order)
    assert report.not_scanned == {}
    assert report.refused == (str(V6_OUTSIDE),)  # outside allowed_networks, like IPv4
    assert (report.targets, report.hosts_scanned) == (2, 2)
    assert {f.key for f in report.findings} == {(str(a), 6379, "tcp") for a in (A, V6_ALLOWED)}
    stored = {r.key for r in await store.list_findings()}
    assert (str(V6_ALLOWED), 6379, "tcp") in stored  # the store keeps IPv6 findings too
    summary = render_summary(report)
    assert "not scanned: 0" in summary and "Why not scanned" not in summary
    assert metrics.registry.get_sample_value("goalkeeper_hosts_not_scanned_total") == 0


class Listing:
    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = tuple(targets)

    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory:
        return Inventory(targets=self.targets, fetched_at=NOW, source="fake")


async def test_mails_are_rendered_as_the_commit_takes_them(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/performance.md: the rendered tick is never all in memory at once."""
    owners = 2 * MESSAGE_CHUNK + 50
    targets = [
        Target(IPv4Address(f"127.46.1.{n}"), f"srv-{n}", f"id-{n}", f"p{n}", "acme",
               Owner(name=f"Owner {n}", email=f"owner-{n}@customer.example"))
        for n in range(1, owners + 1)
    ]  # fmt: skip
    rendered = 0
    render = render_owner_report

    def counting(*args: Any, **kwargs: Any) -> OutgoingMail:
        nonlocal rendered
        rendered += 1
        return render(*args, **kwargs)

    monkeypatch.setattr(compose, "render_owner_report", counting)
    rendered_when_written: list[int] = []
    add = OutboxWriter.add

    async def recording(writer: OutboxWriter, messages: Iterable[NewMessage]) -> None:
        await add(writer, messages)
        rendered_when_written.append(rendered)

    monkeypatch.setattr(OutboxWriter, "add", recording)

    report = await run_tick(
        now=NOW, run_id="r1", settings=settings(), inventory=Listing(targets), scanner=Recording(),
        store=store, dispatch=Kept(), catalog=load_catalog(),
    )  # fmt: skip

    assert len(report.mails) == owners
    assert rendered_when_written == [MESSAGE_CHUNK, 2 * MESSAGE_CHUNK, owners]
    assert len(await store.pending()) == owners


RULE_ID = "5f0d7e3c-2b1a-4c9d-8e7f-6a5b4c3d2e1f"
GROUP_ID = "0b8b0f5c-5d8e-4a6b-9c3e-0e1d2f3a4b5c"


@pytest.mark.parametrize(
    ("egress", "kind", "rule_ids"),
    [
        pytest.param([], "unknown", [], id="no egress: a loopback /32 is not public space"),
        pytest.param(["127.0.0.9"], "world_rule", [RULE_ID], id="the rule covers our egress"),
    ],
)
async def test_each_finding_carries_its_cause_into_json_and_the_store(
    store: StateStore, egress: list[str], kind: str, rule_ids: list[str]
) -> None:
    rule = SecurityGroupRule(
        id=RULE_ID, security_group_id=GROUP_ID, direction="ingress", ethertype="IPv4",
        protocol="tcp", port_range_min=6379, port_range_max=6379,
        remote_ip_prefix="127.0.0.9/32",
    )  # fmt: skip
    firewall = PortFirewall(
        port_id="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        port_security_enabled=True,
        groups=(SecurityGroup(id=GROUP_ID, name="web", rules=(rule,)),),
    )
    report = await run_tick(
        now=NOW, run_id="r5", settings=settings(egress=egress),
        inventory=Listing([dataclasses.replace(target(A), firewall=firewall)]),
        scanner=Recording(), store=store, dispatch=Kept(), catalog=load_catalog(),
    )  # fmt: skip

    shown = report_as_dict(report)["findings"][0]["cause"]
    assert shown["kind"] == kind
    assert [r["rule_id"] for r in shown["rules"]] == rule_ids
    (stored,) = await store.list_findings()
    assert record_as_dict(stored)["cause"] == shown


async def test_open_findings_are_counted_by_cause_in_the_metrics_and_the_tick_record(
    store: StateStore,
) -> None:
    rule = SecurityGroupRule(
        id=RULE_ID, security_group_id=GROUP_ID, direction="ingress", ethertype="IPv4",
        protocol="tcp", port_range_min=6379, port_range_max=6379, remote_ip_prefix="127.0.0.9/32",
    )  # fmt: skip
    ruled = PortFirewall(
        "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", True, (SecurityGroup(GROUP_ID, "web", (rule,)),)
    )
    off = PortFirewall("1a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", False)
    targets = [
        dataclasses.replace(target(A), firewall=ruled),
        dataclasses.replace(target(B), firewall=off),
        target(NEW),  # no firewall known: unknown
    ]
    metrics = Metrics()
    await run_tick(
        now=NOW, run_id="r6", settings=settings(egress=["127.0.0.9"]), inventory=Listing(targets),
        scanner=Recording(), store=store, dispatch=Kept(), catalog=load_catalog(), metrics=metrics,
    )  # fmt: skip
    by_cause = {
        kind: metrics.registry.get_sample_value(
            "goalkeeper_open_findings_by_cause", {"cause": kind}
        )
        for kind in ("world_rule", "port_security_disabled", "unknown")
    }
    assert by_cause == {"world_rule": 1, "port_security_disabled": 1, "unknown": 1}
    last = (await store.last_ticks()).last
    assert last is not None
    assert dict(last.causes) == {"world_rule": 1, "port_security_disabled": 1, "unknown": 1}
