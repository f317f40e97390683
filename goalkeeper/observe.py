"""What a tick sees: the inventory, what of it is in scope, and what the scan found there.

The first stage of the tick (goalkeeper.pipeline runs the rest): the inventory read and the
scan overlapped where the source allows, and the findings built from the result. It reads no
state store and sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from goalkeeper import logs
from goalkeeper.config import ScanSettings, Settings
from goalkeeper.findings import build_findings
from goalkeeper.lifecycle import Coverage
from goalkeeper.model import (
    Finding,
    Inventory,
    InventorySource,
    IPAddress,
    PortSpec,
    Scanner,
    ScanResult,
    Target,
    Transport,
)
from goalkeeper.rootcause import LatentExposure, latent_exposures
from goalkeeper.scanning.catalog import Catalog
from goalkeeper.scope import OUTSIDE, Selection, in_scope, select_targets

log = logs.get_logger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """What the tick saw: the inventory, what of it was in scope, and what the scan found."""

    snapshot: Inventory
    selection: Selection
    result: ScanResult
    ports: tuple[PortSpec, ...]
    targets: Mapping[IPAddress, Target]  # those in scope, by address
    seen: tuple[Finding, ...]
    not_scanned: Mapping[IPAddress, str]  # with the reason the scanner gave
    latent: tuple[LatentExposure, ...] = ()  # advisories (DESIGN §8), never findings


async def observe(
    inventory: InventorySource,
    scanner: Scanner,
    scope: ScanSettings,
    ports: tuple[PortSpec, ...],
    *,
    now: datetime,
    lap: Callable[[str], None],
) -> Observed:
    """Read the inventory and scan what of it is in scope; `lap` is told of each stage's end."""
    snapshot, selection, result = await _inventory_and_scan(inventory, scanner, scope, ports, lap)
    if snapshot.stale_reason:
        log.warning("using the last good inventory", age_s=round(inventory_age(snapshot, now=now)),
                    reason=snapshot.stale_reason)  # fmt: skip
    by_address = {t.address: t for t in selection.targets}
    not_scanned = dict(result.not_scanned)
    seen = build_findings(result, by_address, ports, now=now, egress=scope.egress_addresses)
    # Only the pairs this tick really scanned on each address: a port not looked at is no news.
    latent = latent_exposures(
        selection.targets,
        seen,
        ports,
        egress=scope.egress_addresses,
        coverage=Coverage.of_tick(result, selection, ports),
    )
    return Observed(
        snapshot=snapshot,
        selection=selection,
        result=result,
        ports=ports,
        targets=by_address,
        seen=seen,
        not_scanned=not_scanned,
        latent=latent,
    )


def inventory_age(snapshot: Inventory, *, now: datetime) -> float:
    return max(0.0, (now - snapshot.fetched_at).total_seconds())


async def _inventory_and_scan(
    inventory: InventorySource,
    scanner: Scanner,
    scope: ScanSettings,
    ports: Sequence[PortSpec],
    lap: Callable[[str], None],
) -> tuple[Inventory, Selection, ScanResult]:
    """The inventory, and the scan of its targets in scope, overlapped where the source allows.

    A source that announces its addresses before it is done (OpenStack's are known from Neutron
    while Nova still pages) has them scanned at once. Once the inventory is in, whatever it
    holds beyond them is scanned too, and results for addresses it no longer holds are dropped;
    either way the scan covers exactly the targets, as if it had started afterwards.
    """
    loop = asyncio.get_running_loop()
    announced: asyncio.Future[frozenset[IPAddress]] = loop.create_future()

    def on_addresses(addresses: frozenset[IPAddress]) -> None:  # from the inventory's thread
        loop.call_soon_threadsafe(_settle, announced, addresses)

    fetching = asyncio.ensure_future(inventory.fetch(on_addresses))
    early: asyncio.Future[ScanResult] | None = None
    try:
        await asyncio.wait((announced, fetching), return_when=asyncio.FIRST_COMPLETED)
        if announced.done():
            early_targets = in_scope(
                announced.result(),
                allowed=scope.allowed_networks,
                exclude=scope.exclude,
                loopback=scope.allow_loopback,
            )
            log.info("scan started", hosts=len(early_targets), inventory="still being read")
            early = asyncio.ensure_future(scanner.scan(early_targets, ports))
        snapshot = await fetching
        lap("inventory")
        selection = select_targets(
            snapshot.targets,
            allowed=scope.allowed_networks,
            exclude=scope.exclude,
            loopback=scope.allow_loopback,
        )
        for target in selection.refused:
            log.warning(
                "target refused",
                reason=selection.why.get(target.address, OUTSIDE),
                address=str(target.address),
                server=target.server_name,
                project=target.project_id,
            )
        wanted = [t.address for t in selection.targets]
        if early is None:
            log.info("scan started", hosts=len(wanted), inventory="read")
            result = await scanner.scan(wanted, ports)
        else:
            result = await early
            scanned_early = result.scanned | result.not_scanned.keys()
            rest = [a for a in wanted if a not in scanned_early]
            if rest:
                log.info("scanning targets the early addresses lacked", hosts=len(rest))
                result = result.merged(await scanner.scan(rest, ports))
            result = result.only_for(frozenset(wanted))
        lap("scan")
        return snapshot, selection, result
    finally:
        for pending in (early, fetching):
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending


def _settle(future: asyncio.Future[frozenset[IPAddress]], value: frozenset[IPAddress]) -> None:
    if not future.done():
        future.set_result(value)


def effective_ports(settings: Settings, catalog: Catalog) -> tuple[PortSpec, ...]:
    if settings.scan.ports is None:
        return catalog.ports
    return tuple(
        PortSpec(port=p.port, protocol=Transport(p.protocol), service=p.service)
        for p in settings.scan.ports
    )
