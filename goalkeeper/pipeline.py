"""One tick, end to end: inventory → scope → scan → lifecycle → outbox → dispatch.

`run_tick` is a plain async function with every dependency passed in, so the CLI, the daemon's
schedule and `POST /scan` all run the same code, and tests hand it fakes at each seam. Nothing
is sent before the tick's findings and every message it will send are committed to the state
store in one transaction; the dispatcher only ever sends stored messages. The tick's time is
`now`; the clock is read only to measure the duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from ipaddress import ip_address
from typing import Protocol

from goalkeeper import logs
from goalkeeper.aio import Clock, run_blocking, utc_now
from goalkeeper.config import ScanSettings, Settings
from goalkeeper.crashpoints import crash_point
from goalkeeper.findings import build_findings, count_by_service, unresolved_projects
from goalkeeper.lifecycle import Coverage, plan_lifecycle
from goalkeeper.messages import SUMMARY_KEY, iter_messages, outcome, summary_message
from goalkeeper.metrics import FAMILIES_NOT_SCANNED, Metrics, owner_gauges
from goalkeeper.model import (
    AddressesKnown,
    Inventory,
    InventorySource,
    IPAddress,
    MailOutcome,
    PortSpec,
    Scanner,
    ScanResult,
    Target,
    TickReport,
    Transport,
)
from goalkeeper.notify.summary import render_summary
from goalkeeper.scanning.catalog import Catalog
from goalkeeper.scope import IPV6_NOT_SCANNED, OUTSIDE, Selection, in_scope, select_targets
from goalkeeper.state import NewMessage, OutboxChanged, OutboxMessage, StateStore, TickRecord

log = logs.get_logger(__name__)
FAILURES_LOOKBACK = timedelta(days=1)  # with no earlier run on record
Hold = Callable[[], AbstractAsyncContextManager[object]]
DECIDE_TRIES = 10  # the last one commits whatever was sent meanwhile (a repeat, logged)


class Dispatcher(Protocol):
    """Sends stored messages. Returns, per message id, None (delivered), an error, or nothing
    at all when it does not wait for delivery."""

    async def submit(self, messages: Sequence[OutboxMessage]) -> dict[int, str | None]: ...


class Laps:
    """A tick's stopwatch: how long it has run, and each stage for its log line (`<stage>_s`)."""

    def __init__(self) -> None:
        self._started = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def elapsed(self) -> timedelta:
        return timedelta(seconds=time.perf_counter() - self._started)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[f"{stage}_s"] = round(now - self._last, 3)
        self._last = now


class RecentInventory:
    """An InventorySource that remembers its last snapshot, for owner checks at send time.

    A mail is checked against the owners of the snapshot the tick just read when that is
    recent; after a restart or a long SMTP outage, the inventory is read again first.
    """

    def __init__(
        self,
        source: InventorySource,
        *,
        max_age: timedelta = timedelta(minutes=10),
        clock: Clock = utc_now,
    ) -> None:
        self.source = source
        self.max_age = max_age
        self.clock = clock
        self.latest: Inventory | None = None
        self._owners: dict[IPAddress, Target] = {}

    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory:
        snapshot = await self.source.fetch(on_addresses)
        self.latest = snapshot
        self._owners = {t.address: t for t in snapshot.targets}
        return snapshot

    async def owners(self) -> Mapping[IPAddress, Target]:
        latest = self.latest
        if latest is None or self.clock() - latest.fetched_at > self.max_age:
            await self.fetch()
        return self._owners


async def _inventory_and_scan(
    inventory: InventorySource,
    scanner: Scanner,
    scope: ScanSettings,
    ports: Sequence[PortSpec],
    laps: Laps,
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
        laps.lap("inventory")
        selection = select_targets(
            snapshot.targets,
            allowed=scope.allowed_networks,
            exclude=scope.exclude,
            loopback=scope.allow_loopback,
        )
        if selection.ipv6:
            log.warning(
                "ipv6 addresses not scanned: IPv6 is not scanned yet", count=len(selection.ipv6)
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
        laps.lap("scan")
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


def tick_problem(report: TickReport) -> str | None:
    """Why a tick that ran to the end still did not do its job, or None when it did."""
    if report.targets and not report.hosts_scanned:
        return (
            f"none of {report.targets} hosts could be scanned "
            f"({report.failed_batches} failed nmap runs)"
        )
    return None


async def run_tick(
    *,
    now: datetime,
    run_id: str,
    settings: Settings,
    inventory: InventorySource,
    scanner: Scanner,
    store: StateStore,
    dispatch: Dispatcher,
    catalog: Catalog,
    metrics: Metrics | None = None,
    dry_run: bool = False,
    hold: Hold | None = None,
) -> TickReport:
    """Run one whole tick. A dry run reads the store but writes and sends nothing.

    `hold` (the dispatcher's): while it is held no mail is marked sent, so what the tick reads
    as waiting is still waiting when it commits (its report replaces those mails).
    """
    laps = Laps()
    logs.bind(tick=run_id)
    try:
        recorded = await _to_outbox(
            now=now,
            run_id=run_id,
            settings=settings,
            inventory=inventory,
            scanner=scanner,
            store=store,
            catalog=catalog,
            dry_run=dry_run,
            laps=laps,
            hold=hold or contextlib.nullcontext,
        )
        # The inventory, scan results and lifecycle plan are gone by now: delivery (which a
        # one-off tick waits for) does not keep them alive.
        if isinstance(recorded, _Committed):
            report = await _dispatch(recorded, store=store, dispatch=dispatch, now=now, laps=laps)
        else:
            report = recorded  # a dry run: nothing was stored, nothing goes out
        log.info(
            "tick finished",
            targets=report.targets,
            scanned=report.hosts_scanned,
            not_scanned=len(report.not_scanned),
            refused=len(report.refused),
            excluded=report.excluded,
            findings=len(report.findings),
            resolved=len(report.resolved),
            unmonitored=len(report.unmonitored),
            mails=len(report.mails),
            mails_failed=sum(1 for m in report.mails if m.error and not dry_run),
            mails_queued=sum(1 for m in report.mails if m.queued),
            summary_delivered=report.summary_delivered,
            duration_s=round(report.duration_seconds, 3),
            **laps.seconds,
            dry_run=dry_run,
        )
        if metrics is not None:
            _record(metrics, report)
        return report
    finally:
        logs.unbind("tick")


@dataclasses.dataclass(frozen=True, slots=True)
class _Committed:
    """A tick whose findings and messages are in the store, its messages not yet handed on."""

    report: TickReport
    stored: list[OutboxMessage]
    mail_keys: list[str]  # the recipient key of each of report.mails, in order


async def _to_outbox(
    *,
    now: datetime,
    run_id: str,
    settings: Settings,
    inventory: InventorySource,
    scanner: Scanner,
    store: StateStore,
    catalog: Catalog,
    dry_run: bool,
    laps: Laps,
    hold: Hold,
) -> TickReport | _Committed:
    """Inventory, scan, lifecycle, and the commit of findings and outbox (not in a dry run)."""
    ports = effective_ports(settings, catalog)
    snapshot, selection, result = await _inventory_and_scan(
        inventory, scanner, settings.scan, ports, laps
    )
    age = max(0.0, (now - snapshot.fetched_at).total_seconds())
    if snapshot.stale_reason:
        log.warning("using the last good inventory", age_s=round(age), reason=snapshot.stale_reason)
    by_address = {t.address: t for t in selection.targets}
    # Counted as not scanned with the reason, beside what the scanner could not scan.
    not_scanned = {t.address: IPV6_NOT_SCANNED for t in selection.ipv6} | dict(result.not_scanned)
    seen = build_findings(result, by_address, ports, now=now)

    async def decide(check: bool) -> TickReport | _Committed:
        # Only records the lifecycle can change: on hosts scanned now, seen open now, open, or
        # told about by a mail still waiting (this tick's report for that owner replaces it).
        waiting_mails = await store.waiting_mails()
        waiting = {key for keys in waiting_mails.values() for key in keys}
        previous = await store.load_findings(
            result.scanned | {f.address for f in seen} | {ip_address(k[0]) for k in waiting},
            open_anywhere=True,  # an open record on a host not scanned becomes unmonitored
        )
        plan = await run_blocking(
            None,
            plan_lifecycle,
            previous,
            seen,
            Coverage.of_tick(result, selection, ports),
            now=now,
            reminder_days=settings.notify.reminder_days,
            notify_resolved=settings.notify.notify_resolved,
            pending=waiting,
        )
        since = await store.previous_run_start(now) or now - FAILURES_LOOKBACK
        failures = tuple(
            f"{m.channel} to {m.recipient}: {m.last_error}" for m in await store.failed_since(since)
        )
        composed = iter_messages(
            (*plan.to_notify, *plan.resolved_to_notify),
            settings=settings,
            catalog=catalog,
            run_id=run_id,
            now=now,
        )
        # Filled as the mails are rendered; the report (and the summary made of it) comes after.
        mails: list[MailOutcome] = []
        mail_keys: list[str] = []
        reports: list[TickReport] = []

        def report_of_tick() -> TickReport:
            return TickReport(
                run_id=run_id,
                environment=settings.environment,
                started_at=now,
                finished_at=now + laps.elapsed(),
                inventory_source=snapshot.source,
                inventory_age_seconds=age,
                inventory_stale_reason=snapshot.stale_reason,
                targets=len(by_address),
                refused=tuple(str(t.address) for t in selection.refused),
                excluded=len(selection.excluded),
                hosts_scanned=len(result.scanned),
                not_scanned={
                    str(a): why
                    for a, why in sorted(
                        not_scanned.items(), key=lambda i: (i[0].version, int(i[0]))
                    )
                },
                findings=plan.current,
                resolved=plan.resolved,
                unmonitored=plan.unmonitored,
                mails=tuple(mails),
                owners_not_found=unresolved_projects(plan.current),
                failed_batches=result.failed_batches,
                warnings=result.warnings,
                dry_run=dry_run,
                notification_failures=failures,
                owner_lookup=snapshot.owners,
                family_not_scanned={"ipv6": len(selection.ipv6)} if selection.ipv6 else {},
            )

        if dry_run:
            mails.extend(
                dataclasses.replace(outcome(r, m, queued=False), error="dry run: not sent")
                for r, m in composed
            )
            return report_of_tick()

        def outbox() -> Iterator[NewMessage]:
            # Consumed by commit_tick inside its transaction, a chunk at a time: each mail is
            # rendered when the store asks for it, so the rendered tick is never all in memory.
            for owner_report, new in composed:
                mails.append(outcome(owner_report, new, queued=True))
                mail_keys.append(new.recipient_key)
                yield new
            reports.append(report_of_tick())
            summary = summary_message(render_summary(reports[0]), settings=settings, run_id=run_id)
            if summary is not None:
                yield summary

        stored = await store.commit_tick(
            run_id=run_id,
            started_at=now,
            upserts=plan.upserts,
            messages=outbox(),
            still_pending=waiting_mails if check else (),
        )
        crash_point("committed")  # test-only, inert in production (goalkeeper.crashpoints)
        (report,) = reports
        laps.lap("record")
        return _Committed(report, stored, mail_keys)

    # The plan counts on the mails waiting when it was made: one sent before the commit would
    # be told again by this tick's report. The commit refuses then, and the tick decides again
    # (the sender is one mail at a time, so this settles at once).
    for attempt in range(1, DECIDE_TRIES + 1):
        try:
            if dry_run:
                return await decide(check=False)
            async with hold():
                return await decide(check=attempt < DECIDE_TRIES)
        except OutboxChanged as changed:
            log.info("a waiting mail went out while the tick decided: deciding again",
                     sent=changed.sent, attempt=attempt)  # fmt: skip
    raise AssertionError("unreachable: the last try does not check")


async def _dispatch(
    committed: _Committed,
    *,
    store: StateStore,
    dispatch: Dispatcher,
    now: datetime,
    laps: Laps,
) -> TickReport:
    """Hand the stored messages on, and note in the report what the dispatcher said of them."""
    report, stored = committed.report, committed.stored
    results = await dispatch.submit(stored)
    laps.lap("dispatch")
    mails = list(report.mails)
    by_key = {m.recipient_key: m.id for m in stored}
    for index, key in enumerate(committed.mail_keys):
        row_id = by_key[key]
        if row_id in results:
            error = results[row_id]
            mails[index] = dataclasses.replace(
                mails[index], delivered=error is None, error=error, queued=False
            )
    summary_id = by_key.get(SUMMARY_KEY)
    delivered = None
    if summary_id is not None and summary_id in results:
        delivered = results[summary_id] is None
    # What a restarted daemon shows as the last tick (goalkeeper.storewatch reads it back);
    # the report then ends when the store says the run ended, so the two agree.
    finished_at = now + laps.elapsed()
    await store.finish_run(report.run_id, finished_at=finished_at, summary=_record_of(report))
    return dataclasses.replace(
        report, mails=tuple(mails), summary_delivered=delivered, finished_at=finished_at
    )


def _record_of(report: TickReport) -> dict[str, object]:
    share, incident = owner_gauges(report.owner_lookup)
    return TickRecord(
        outcome="success" if tick_problem(report) is None else "failure",
        targets=report.targets,
        open_findings=tuple(count_by_service(report.findings)),
        owners_unresolved=len(report.owners_not_found),
        owner_resolved_share=share,
        owner_lookup_incident=incident,
        unmonitored=_unmonitored_counts(report),
    ).summary()


def _unmonitored_counts(report: TickReport) -> dict[str, int]:
    return dict(Counter(f.unmonitored_reason or "" for f in report.unmonitored))


def _record(metrics: Metrics, report: TickReport) -> None:
    metrics.targets.set(report.targets)
    metrics.hosts_scanned.inc(report.hosts_scanned)
    skipped = report.family_not_scanned
    metrics.hosts_not_scanned.inc(len(report.not_scanned) - sum(skipped.values()))
    for family in FAMILIES_NOT_SCANNED:
        metrics.addresses_skipped.labels(family=family).set(skipped.get(family, 0))
    metrics.inventory_age.set(report.inventory_age_seconds)
    metrics.owners_unresolved.set(len(report.owners_not_found))
    metrics.set_owner_lookup(report.owner_lookup)
    metrics.set_open_findings(count_by_service(report.findings))
    metrics.set_unmonitored_findings(_unmonitored_counts(report))
    if report.dry_run:
        return
    if tick_problem(report) is None:
        metrics.ticks.labels(outcome="success").inc()
        metrics.last_success.set(report.finished_at.timestamp())
    else:
        metrics.ticks.labels(outcome="failure").inc()
    metrics.tick_duration.observe(report.duration_seconds)
