"""The cloud inventory: OpenStack's public addresses joined with Fleio's owners, cached.

OpenStack (in a thread) and Fleio (on the loop) are read at the same time. When either fails,
the last good inventory is returned with `stale_reason` saying what failed and how old the copy
is, so one bad morning of an API does not silence the scan; with no good inventory yet, the
fetch raises InventoryUnavailable naming what failed. Each inventory carries how well billing
resolved its projects' owners (model.OwnerLookup), so a join that resolves nobody is an
incident in the summary and the metrics, not a quiet morning of NOT FOUND mails. Time comes
from an injected clock. Each region of `inventory.openstack.regions` is read on its own: one that
fails is named in `Inventory.regions_down` with the reason, its targets taken from its own last
good copy (none: its servers go unscanned this tick, and it says so), while the others are read
fresh; only when every region fails is the whole last good inventory used. This module joins
and caches; it does not talk to either API itself and never logs a credential.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta

import structlog

from goalkeeper.aio import Clock, utc_now
from goalkeeper.config import InventorySettings
from goalkeeper.inventory.fleio import BillingDirectory, FleioClient, FleioError
from goalkeeper.inventory.openstack import OpenStackError, OpenStackInventory
from goalkeeper.model import (
    UNKNOWN_OWNER,
    AddressesKnown,
    Inventory,
    Owner,
    OwnerLookup,
    OwnerLookupState,
    Target,
)

log = structlog.get_logger(__name__)
SOURCE = "openstack"


class InventoryUnavailable(Exception):
    """No inventory at all: the refresh failed and there is no earlier good copy to use."""


class _RefreshFailed(Exception):
    """What failed in one refresh, OpenStack's and Fleio's failures together."""

    def __init__(self, message: str, regions_down: Mapping[str, str]) -> None:
        super().__init__(message)
        self.regions_down = regions_down


class CloudInventory:
    """An InventorySource over OpenStack and Fleio that keeps its last good inventory.

    `min_age` lets a fetch soon after a good one (an on-demand scan after the daily one) reuse
    it instead of reading both APIs again; the default refreshes on every fetch.
    """

    def __init__(
        self,
        settings: InventorySettings,
        *,
        openstack: OpenStackInventory | None = None,
        regions: Mapping[str, OpenStackInventory] | None = None,
        fleio: FleioClient | None = None,
        clock: Clock = utc_now,
        min_age: timedelta = timedelta(0),
    ) -> None:
        if regions:
            self.regions = dict(regions)
        elif openstack is not None:
            self.regions = {"": openstack}
        elif settings.openstack.regions:
            self.regions = {
                name: OpenStackInventory(settings.openstack, region=name)
                for name in settings.openstack.regions
            }
        else:  # the cloud's own region, unnamed on its targets
            self.regions = {"": OpenStackInventory(settings.openstack)}
        self.openstack = next(iter(self.regions.values()))
        # Each region's last good targets and when they were read.
        self._region_copies: dict[str, tuple[tuple[Target, ...], datetime]] = {}
        billing = settings.fleio
        if fleio is None and billing.enabled is not False and billing.url and billing.token:
            fleio = FleioClient(billing)
        self.fleio = fleio
        self.owners_off = fleio is None and billing.enabled is False
        self.min_resolved_share = billing.min_resolved_share
        self.clock = clock
        self.min_age = min_age
        self._last_good: Inventory | None = None
        self._lock = asyncio.Lock()

    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory:
        """The inventory; `on_addresses` hears its addresses once OpenStack's Neutron is read,
        before Nova, Keystone and Fleio are done (not at all when a kept copy is returned)."""
        async with self._lock:  # one refresh at a time; a caller that waited may reuse it
            now = self.clock()
            last = self._last_good
            if last is not None and now - last.fetched_at < self.min_age:
                return last
            try:
                inventory = await self._refresh(now, on_addresses)
            except _RefreshFailed as err:
                return self._fall_back(now, str(err), err.regions_down)
            self._last_good = inventory
            return inventory

    async def aclose(self) -> None:
        for reader in self.regions.values():
            await asyncio.to_thread(reader.close)

    async def _refresh(self, now: datetime, on_addresses: AddressesKnown | None) -> Inventory:
        billing = _no_billing() if self.fleio is None else self.fleio.read()
        # All at once; each failure is kept so the message can name every system that failed.
        read, owners = await asyncio.gather(
            asyncio.gather(
                *(reader.targets(on_addresses) for reader in self.regions.values()),
                return_exceptions=True,
            ),
            billing,
            return_exceptions=True,
        )
        if isinstance(read, BaseException):  # the inner gather keeps each region's error
            raise read
        down = {
            name: str(r)
            for name, r in zip(self.regions, read, strict=True)
            if isinstance(r, OpenStackError)
        }
        failures = [str(owners)] if isinstance(owners, FleioError) else []
        if failures or len(down) == len(self.regions):
            raise _RefreshFailed("; ".join([*down.values(), *failures]), down)
        # Anything else is a bug, not an outage: the last good copy must not hide it.
        for result in (*read, owners):
            if isinstance(result, BaseException) and not isinstance(result, OpenStackError):
                raise result
        if isinstance(owners, BaseException):
            raise owners
        targets: list[Target] = []
        for name, result in zip(self.regions, read, strict=True):
            if isinstance(result, BaseException):
                down[name] = self._region_fallback(name, down[name], now)
                targets += self._region_copies.get(name, ((), now))[0]
            else:
                self._region_copies[name] = (result, now)
                targets += result
        joined = join_owners(tuple(targets), owners.owners)
        lookup = self._lookup(joined, owners)
        log.info(
            "inventory refreshed",
            targets=len(joined),
            projects=lookup.projects,
            projects_not_found=lookup.projects - lookup.resolved,
        )
        if lookup.incident:
            log.warning("owner lookup incident", detail=lookup.describe())
        return Inventory(
            targets=joined, fetched_at=now, source=SOURCE, owners=lookup, regions_down=down
        )

    def _region_fallback(self, name: str, failure: str, now: datetime) -> str:
        """Why region `name` is not read fresh, and what is used instead (its last good copy)."""
        copy = self._region_copies.get(name)
        if copy is None:
            reason = f"{failure}; no earlier copy of region {name}: its servers are not scanned"
        else:
            reason = (
                f"{failure}; region {name}'s targets are from {copy[1].isoformat()} "
                f"({_age(now - copy[1])} old)"
            )
        log.warning("region not read", region=name, reason=reason)
        return reason

    def _lookup(self, joined: tuple[Target, ...], billing: BillingDirectory) -> OwnerLookup:
        if self.fleio is not None:
            state = OwnerLookupState.ON
        else:
            state = OwnerLookupState.OFF if self.owners_off else OwnerLookupState.UNCONFIGURED
        resolved = {t.project_id: t.owner.known for t in joined}
        return OwnerLookup(
            state=state,
            projects=len(resolved),
            resolved=sum(resolved.values()),
            listed=billing.projects_listed,
            min_share=self.min_resolved_share,
        )

    def _fall_back(self, now: datetime, failure: str, down: Mapping[str, str]) -> Inventory:
        last = self._last_good
        if last is None:
            log.error("inventory unavailable", error=failure)
            raise InventoryUnavailable(
                f"inventory unavailable: {failure}; there is no earlier inventory to fall back on"
            )
        age = now - last.fetched_at
        log.warning(
            "inventory refresh failed, using the last good one",
            error=failure,
            age_seconds=round(age.total_seconds(), 1),
            fetched_at=last.fetched_at.isoformat(),
        )
        reason = (
            f"{failure}; using the inventory fetched at {last.fetched_at.isoformat()} "
            f"({_age(age)} old)"
        )
        named = {name: why for name, why in down.items() if name}  # "": the only region
        return dataclasses.replace(last, stale_reason=reason, regions_down=named)


def join_owners(targets: tuple[Target, ...], owners: Mapping[str, Owner]) -> tuple[Target, ...]:
    """Each target with its project's owner; UNKNOWN_OWNER (NOT FOUND) where billing has none."""
    return tuple(
        dataclasses.replace(target, owner=owners.get(target.project_id, UNKNOWN_OWNER))
        for target in targets
    )


async def _no_billing() -> BillingDirectory:
    return BillingDirectory(owners={}, projects_listed=0)


def _age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"
