"""One tick, end to end: observe → plan → compose → commit → dispatch.

`run_tick` is a plain async function with every dependency passed in, so the CLI, the daemon's
schedule and `POST /scan` all run the same code, and tests hand it fakes at each seam. Each
stage takes the previous one's value (Observed, Decision, the composed mails, CommittedTick)
and hands its own on; none writes into another's. Nothing is sent before the tick's findings
and every message it will send are committed in one transaction; the dispatcher only ever
sends stored messages. The tick's time is `now`; the clock is read only to measure duration.
Over 300 lines so that the stages, the values they pass on and the report read in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from ipaddress import ip_address
from typing import Protocol

from goalkeeper import logs
from goalkeeper.aio import Clock, run_blocking, utc_now
from goalkeeper.compose import SUMMARY_KEY, ComposedMail, compose_summary, compose_tick
from goalkeeper.config import Settings
from goalkeeper.crashpoints import crash_point
from goalkeeper.exceptions import ExceptionPolicy
from goalkeeper.findings import (
    LatentPlan,
    count_by_service,
    plan_latent,
    recipient_key,
    unresolved_projects,
)
from goalkeeper.lifecycle import Coverage, FindingKey, LifecyclePlan, plan_lifecycle
from goalkeeper.metrics import Metrics, owner_gauges
from goalkeeper.model import (
    AddressesKnown,
    Inventory,
    InventorySource,
    IPAddress,
    MailOutcome,
    Scanner,
    Target,
    TickReport,
)
from goalkeeper.observe import Observed, effective_ports, inventory_age, observe
from goalkeeper.rootcause import Cause
from goalkeeper.scanning.catalog import Catalog
from goalkeeper.schedule import next_check
from goalkeeper.state import (
    MESSAGE_CHUNK,
    LatentRecord,
    NewMessage,
    OutboxChanged,
    OutboxMessage,
    StateStore,
    StatusChange,
    TickRecord,
    TickStats,
    status_changes,
)

log = logs.get_logger(__name__)
FAILURES_LOOKBACK = timedelta(days=1)  # with no earlier run on record
Hold = Callable[[], AbstractAsyncContextManager[object]]
DECIDE_TRIES = 10  # the last one commits whatever was sent meanwhile (a repeat, logged)


class Dispatcher(Protocol):
    """Sends stored messages. Returns, per message id, None (delivered), an error, or nothing
    at all when it does not wait for delivery."""

    async def submit(self, messages: Sequence[OutboxMessage]) -> dict[int, str | None]: ...


class Stopwatch:
    """How long a tick has run, and each of its stages for its log line (`<stage>_s`)."""

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


def exception_policy(settings: Settings) -> ExceptionPolicy:
    """The exceptions a tick honours, from the settings it started with (SIGHUP swaps them)."""
    return ExceptionPolicy(
        provider=settings.provider_exceptions(),
        max_days=settings.notify.max_exception_days,
        acknowledge_unauthenticated=settings.notify.acknowledge_unauthenticated,
    )


def tick_problem(report: TickReport) -> str | None:
    """Why a tick that ran to the end still did not do its job, or None when it did."""
    if report.targets and not report.hosts_scanned:
        return (
            f"none of {report.targets} hosts could be scanned "
            f"({report.failed_batches} failed nmap runs)"
        )
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class TickContext:
    """What one tick is and works with, handed whole to each of its stages."""

    now: datetime
    run_id: str
    settings: Settings
    inventory: InventorySource
    scanner: Scanner
    store: StateStore
    dispatch: Dispatcher
    catalog: Catalog
    dry_run: bool
    hold: Hold
    stopwatch: Stopwatch


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The lifecycle plan, and the waiting mails it counted on (by id, with their findings)."""

    plan: LifecyclePlan
    waiting: Mapping[int, tuple[FindingKey, ...]]
    failures: tuple[str, ...]  # notifications given up on since the previous run
    latent: LatentPlan = dataclasses.field(
        default_factory=LatentPlan
    )  # which owners hear of their latent exposures, and how
    changes: tuple[StatusChange, ...] = ()  # the findings' status changes, for their history


@dataclasses.dataclass(frozen=True, slots=True)
class CommittedTick:
    """A tick whose findings and messages are in the store, its messages not yet handed on."""

    report: TickReport
    stored: list[OutboxMessage]


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
    tick = TickContext(
        now=now,
        run_id=run_id,
        settings=settings,
        inventory=inventory,
        scanner=scanner,
        store=store,
        dispatch=dispatch,
        catalog=catalog,
        dry_run=dry_run,
        hold=hold or contextlib.nullcontext,
        stopwatch=Stopwatch(),
    )
    logs.bind(tick=run_id)
    try:
        observed = await _observe(tick)
        if dry_run:
            report = await _dry_run(tick, observed)  # nothing is stored, nothing goes out
        else:
            committed = await _decide_and_commit(tick, observed)
            # The inventory, scan results and lifecycle plan are gone by now: delivery (which a
            # one-off tick waits for) does not keep them alive.
            del observed
            report = await _dispatch(tick, committed)
        _log_finished(report, tick.stopwatch)
        if metrics is not None:
            _record(metrics, report)
        return report
    finally:
        logs.unbind("tick")


async def _observe(tick: TickContext) -> Observed:
    return await observe(
        tick.inventory,
        tick.scanner,
        tick.settings.scan,
        effective_ports(tick.settings, tick.catalog),
        now=tick.now,
        lap=tick.stopwatch.lap,
    )


async def _plan(tick: TickContext, observed: Observed) -> Decision:
    """The lifecycle plan from the store's records and what this tick saw."""
    store, result = tick.store, observed.result
    # Only records the lifecycle can change: on hosts scanned now, seen open now, open, or
    # told about by a mail still waiting (this tick's report for that owner replaces it).
    waiting_mails = await store.waiting_mails()
    waiting = {key for keys in waiting_mails.values() for key in keys}
    previous = await store.load_findings(
        result.scanned | {f.address for f in observed.seen} | {ip_address(k[0]) for k in waiting},
        open_anywhere=True,  # an open record on a host not scanned becomes unmonitored
    )
    plan = await run_blocking(
        None,
        plan_lifecycle,
        previous,
        observed.seen,
        Coverage.of_tick(result, observed.selection, observed.ports),
        now=tick.now,
        reminder_days=tick.settings.notify.reminder_days,
        notify_resolved=tick.settings.notify.notify_resolved,
        pending=waiting,
        exceptions=exception_policy(tick.settings),
    )
    since = await store.previous_run_start(tick.now) or tick.now - FAILURES_LOOKBACK
    failures = tuple(
        f"{m.channel} to {m.recipient}: {m.last_error}" for m in await store.failed_since(since)
    )
    reports = {
        recipient_key(f.owner, f.target) for f in (*plan.to_notify, *plan.resolved_to_notify)
    }
    latent = plan_latent(
        observed.latent,
        reports=reports,
        told=await store.latent_told(),
        now=tick.now,
        latent_days=tick.settings.notify.latent_days,
    )
    changes = await run_blocking(  # a pass over every record written: off the loop, as the plan
        None, status_changes, previous, plan.upserts, run_id=tick.run_id, at=tick.now
    )
    return Decision(
        plan=plan, waiting=waiting_mails, failures=failures, latent=latent, changes=tuple(changes)
    )


def _compose(tick: TickContext, decision: Decision) -> Iterator[ComposedMail]:
    return compose_tick(
        decision.plan,
        settings=tick.settings,
        catalog=tick.catalog,
        run_id=tick.run_id,
        now=tick.now,
        latent=decision.latent,
        next_check=next_check(tick.settings.schedule, after=tick.now),
    )


async def _dry_run(tick: TickContext, observed: Observed) -> TickReport:
    decision = await _plan(tick, observed)
    not_sent = tuple(
        dataclasses.replace(mail.outcome, queued=False, error="dry run: not sent")
        for mail in _compose(tick, decision)
    )
    return _report(tick, observed, decision, not_sent)


async def _decide_and_commit(tick: TickContext, observed: Observed) -> CommittedTick:
    """Plan, compose and commit, while the dispatcher holds its sends.

    The plan counts on the mails waiting when it was made: one sent before the commit would
    be told again by this tick's report. The commit refuses then, and the tick decides again
    (the sender is one mail at a time, so this settles at once).
    """
    for attempt in range(1, DECIDE_TRIES + 1):
        try:
            async with tick.hold():
                decision = await _plan(tick, observed)
                mails = _compose(tick, decision)
                return await _commit(tick, observed, decision, mails,
                                     check=attempt < DECIDE_TRIES)  # fmt: skip
        except OutboxChanged as changed:
            log.info("a waiting mail went out while the tick decided: deciding again",
                     sent=changed.sent, attempt=attempt)  # fmt: skip
    raise AssertionError("unreachable: the last try does not check")


async def _commit(
    tick: TickContext,
    observed: Observed,
    decision: Decision,
    mails: Iterator[ComposedMail],
    *,
    check: bool,
) -> CommittedTick:
    """Findings and mails in one transaction, then the summary of the report they make.

    The mails are rendered as the commit takes them, a chunk at a time, so the rendered tick
    is never all in memory; only their outcomes (a few fields each) are kept for the report.
    """
    async with tick.store.committing(
        run_id=tick.run_id,
        started_at=tick.now,
        upserts=decision.plan.upserts,
        still_pending=decision.waiting if check else (),
        latent=_latent_records(observed, now=tick.now),
        latent_told=decision.latent.told,
        changes=decision.changes,
    ) as outbox:
        outcomes: list[MailOutcome] = []
        while chunk := list(itertools.islice(mails, MESSAGE_CHUNK)):
            outcomes.extend(mail.outcome for mail in chunk)
            await outbox.add(_let_go(chunk))
        report = _report(tick, observed, decision, tuple(outcomes))
        summary = compose_summary(report, settings=tick.settings)
        if summary is not None:
            await outbox.add([summary])
    crash_point("committed")  # test-only, inert in production (goalkeeper.crashpoints)
    tick.stopwatch.lap("record")
    return CommittedTick(report, outbox.stored)


def _latent_records(observed: Observed, *, now: datetime) -> list[LatentRecord]:
    return [
        LatentRecord(
            address=str(e.address),
            port=e.port,
            protocol=str(e.protocol),
            recipient_key=recipient_key(e.target.owner, e.target),
            server_id=e.target.server_id,
            server_name=e.target.server_name,
            project_id=e.target.project_id,
            rules=json.dumps([dataclasses.asdict(r) for r in e.rules], sort_keys=True),
            seen_at=now,
        )
        for e in observed.latent
    ]


def _let_go(chunk: list[ComposedMail]) -> Iterator[NewMessage]:
    """The chunk's messages, each dropped from the chunk as it is taken: the writer can then
    free the rendered payloads once it has made their rows, before the INSERT runs."""
    chunk.reverse()
    while chunk:
        yield chunk.pop().message


def _report(
    tick: TickContext, observed: Observed, decision: Decision, mails: tuple[MailOutcome, ...]
) -> TickReport:
    snapshot, selection, result, plan = (
        observed.snapshot,
        observed.selection,
        observed.result,
        decision.plan,
    )
    return TickReport(
        run_id=tick.run_id,
        environment=tick.settings.environment,
        started_at=tick.now,
        finished_at=tick.now + tick.stopwatch.elapsed(),
        inventory_source=snapshot.source,
        inventory_age_seconds=inventory_age(snapshot, now=tick.now),
        inventory_stale_reason=snapshot.stale_reason,
        targets=len(observed.targets),
        refused=tuple(str(t.address) for t in selection.refused),
        excluded=len(selection.excluded),
        hosts_scanned=len(result.scanned),
        not_scanned={
            str(a): why
            for a, why in sorted(
                observed.not_scanned.items(), key=lambda i: (i[0].version, int(i[0]))
            )
        },
        findings=plan.current,
        resolved=plan.resolved,
        unmonitored=plan.unmonitored,
        acknowledged=plan.acknowledged,
        mails=mails,
        owners_not_found=unresolved_projects(plan.current),
        failed_batches=result.failed_batches,
        warnings=result.warnings,
        dry_run=tick.dry_run,
        notification_failures=decision.failures,
        owner_lookup=snapshot.owners,
        latent_exposures=len(observed.latent),
        regions_down=dict(snapshot.regions_down),
        targets_by_region=dict(Counter(t.region for t in observed.targets.values())),
    )


async def _dispatch(tick: TickContext, committed: CommittedTick) -> TickReport:
    """Hand the stored messages on, and note in the report what the dispatcher said of them."""
    report, stored = committed.report, committed.stored
    results = await tick.dispatch.submit(stored)
    tick.stopwatch.lap("dispatch")
    # A mail's Message-ID is made of its run and recipient key: one per stored mail.
    said = {m.message_id: results[m.id] for m in stored if m.id in results}
    mails = tuple(_as_said(mail, said) for mail in report.mails)
    summary = next((m for m in stored if m.recipient_key == SUMMARY_KEY), None)
    delivered = None
    if summary is not None and summary.id in results:
        delivered = results[summary.id] is None
    # What a restarted daemon shows as the last tick (goalkeeper.storewatch reads it back);
    # the report then ends when the store says the run ended, so the two agree.
    finished_at = tick.now + tick.stopwatch.elapsed()
    report = dataclasses.replace(
        report, mails=mails, summary_delivered=delivered, finished_at=finished_at
    )
    await tick.store.finish_run(
        report.run_id,
        finished_at=finished_at,
        summary=_record_of(report),
        stats=TickStats.of(
            report, outcome="success" if tick_problem(report) is None else "failure"
        ),
    )
    return report


def _as_said(mail: MailOutcome, said: Mapping[str, str | None]) -> MailOutcome:
    """The mail's outcome with what the dispatcher said of it (when it said anything)."""
    if mail.message_id not in said:
        return mail
    error = said[mail.message_id]
    return dataclasses.replace(mail, delivered=error is None, error=error, queued=False)


def _log_finished(report: TickReport, stopwatch: Stopwatch) -> None:
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
        mails_failed=sum(1 for m in report.mails if m.error and not report.dry_run),
        mails_queued=sum(1 for m in report.mails if m.queued),
        summary_delivered=report.summary_delivered,
        duration_s=round(report.duration_seconds, 3),
        **stopwatch.seconds,
        dry_run=report.dry_run,
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
        causes=_cause_counts(report),
        acknowledged=_acknowledged_counts(report),
    ).summary()


def _unmonitored_counts(report: TickReport) -> dict[str, int]:
    return dict(Counter(f.unmonitored_reason or "" for f in report.unmonitored))


def _acknowledged_counts(report: TickReport) -> dict[str, int]:
    return dict(Counter(f.acknowledged.source for f in report.acknowledged if f.acknowledged))


def _cause_counts(report: TickReport) -> dict[str, int]:
    return dict(Counter(Cause.from_json(f.cause).kind for f in report.findings))


def _record(metrics: Metrics, report: TickReport) -> None:
    metrics.targets.set(report.targets)
    metrics.set_regions(report.targets_by_region, report.regions_down)
    metrics.hosts_scanned.inc(report.hosts_scanned)
    metrics.hosts_not_scanned.inc(len(report.not_scanned))
    metrics.inventory_age.set(report.inventory_age_seconds)
    metrics.owners_unresolved.set(len(report.owners_not_found))
    metrics.set_owner_lookup(report.owner_lookup)
    metrics.set_open_findings(count_by_service(report.findings))
    metrics.set_unmonitored_findings(_unmonitored_counts(report))
    metrics.set_open_findings_by_cause(_cause_counts(report))
    metrics.set_acknowledged_findings(_acknowledged_counts(report))
    if report.dry_run:
        return
    if tick_problem(report) is None:
        metrics.ticks.labels(outcome="success").inc()
        metrics.last_success.set(report.finished_at.timestamp())
    else:
        metrics.ticks.labels(outcome="failure").inc()
    metrics.tick_duration.observe(report.duration_seconds)
