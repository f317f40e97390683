"""One tick, end to end: inventory → scope → scan → findings → mails → Telegram summary.

`run_tick` is a plain async function with every dependency passed in, so the CLI, the daemon's
schedule and `POST /scan` all call the same code, and tests hand it fakes at each seam. It never
reads the clock for decisions (the tick's time is `now`); it measures its own duration only.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta
from typing import Any

from goalkeeper import logs
from goalkeeper.config import Settings
from goalkeeper.findings import (
    build_findings,
    count_by_service,
    group_reports,
    unresolved_projects,
)
from goalkeeper.metrics import Metrics
from goalkeeper.model import (
    Dispatcher,
    Finding,
    InventorySource,
    MailOutcome,
    OutgoingMail,
    OwnerReport,
    PortSpec,
    Scanner,
    TickReport,
    Transport,
)
from goalkeeper.notify.render import render_owner_report, render_summary
from goalkeeper.scanning.catalog import Catalog
from goalkeeper.scope import select_targets

log = logs.get_logger(__name__)


def tick_problem(report: TickReport) -> str | None:
    """Why a tick that ran to the end still did not do its job, or None when it did."""
    if report.targets and not report.hosts_scanned:
        return (
            f"none of {report.targets} hosts could be scanned "
            f"({report.failed_batches} failed nmap runs)"
        )
    return None


def effective_ports(settings: Settings, catalog: Catalog) -> tuple[PortSpec, ...]:
    if settings.scan.ports is None:
        return catalog.ports
    return tuple(
        PortSpec(port=p.port, protocol=Transport(p.protocol), service=p.service)
        for p in settings.scan.ports
    )


async def run_tick(
    *,
    now: datetime,
    run_id: str,
    settings: Settings,
    inventory: InventorySource,
    scanner: Scanner,
    dispatch: Dispatcher,
    catalog: Catalog,
    metrics: Metrics | None = None,
    dry_run: bool = False,
) -> TickReport:
    """Run one whole tick. `dispatch` gets the mails and the summary (nothing on a dry run)."""
    started = time.perf_counter()
    logs.bind(tick=run_id)
    try:
        report = await _tick(
            now=now,
            run_id=run_id,
            settings=settings,
            inventory=inventory,
            scanner=scanner,
            dispatch=dispatch,
            catalog=catalog,
            dry_run=dry_run,
            started=started,
        )
        if not dry_run:
            delivered = await dispatch.submit_summary(run_id, render_summary(report))
            report = dataclasses.replace(report, summary_delivered=delivered)
        log.info(
            "tick finished",
            targets=report.targets,
            scanned=report.hosts_scanned,
            not_scanned=len(report.not_scanned),
            refused=len(report.refused),
            excluded=report.excluded,
            findings=len(report.findings),
            mails=len(report.mails),
            mails_failed=sum(1 for m in report.mails if m.error and not dry_run),
            mails_queued=sum(1 for m in report.mails if m.queued),
            summary_delivered=report.summary_delivered,
            duration_s=round(report.duration_seconds, 3),
            dry_run=dry_run,
        )
        if metrics is not None:
            _record(metrics, report)
        return report
    finally:
        logs.unbind("tick")


async def _tick(
    *,
    now: datetime,
    run_id: str,
    settings: Settings,
    inventory: InventorySource,
    scanner: Scanner,
    dispatch: Dispatcher,
    catalog: Catalog,
    dry_run: bool,
    started: float,
) -> TickReport:
    snapshot = await inventory.fetch()
    age = max(0.0, (now - snapshot.fetched_at).total_seconds())
    if snapshot.stale_reason:
        log.warning("using the last good inventory", age_s=round(age), reason=snapshot.stale_reason)
    selection = select_targets(
        snapshot.targets, allowed=settings.scan.allowed_networks, exclude=settings.scan.exclude
    )
    for target in selection.refused:
        log.warning(
            "target refused: outside scan.allowed_networks",
            address=str(target.address),
            server=target.server_name,
            project=target.project_id,
        )
    ports = effective_ports(settings, catalog)
    by_address = {t.address: t for t in selection.targets}
    result = await scanner.scan(list(by_address), ports)
    findings = build_findings(result, by_address, ports, now=now)
    redirect = settings.environment == "stage" or not settings.notify.send_to_customers
    owner_reports = group_reports(findings, ops_email=settings.notify.ops_email, redirect=redirect)
    mails = [
        render_owner_report(
            owner_report,
            environment=settings.environment,
            run_id=run_id,
            sender=settings.notify.sender,
            advice={f.service: catalog.advice_for(f.service) for f in owner_report.findings},
            generated_at=now,
            templates_dir=settings.notify.templates_dir,
        )
        for owner_report in owner_reports
    ]
    pairs = list(zip(owner_reports, mails, strict=True))
    if dry_run:
        outcomes = tuple(_not_sent(report, mail) for report, mail in pairs)
    else:
        outcomes = await dispatch.submit_mails(run_id, pairs)
    elapsed = time.perf_counter() - started
    return TickReport(
        run_id=run_id,
        environment=settings.environment,
        started_at=now,
        finished_at=now + timedelta(seconds=elapsed),
        inventory_source=snapshot.source,
        inventory_age_seconds=age,
        inventory_stale_reason=snapshot.stale_reason,
        targets=len(by_address),
        refused=tuple(str(t.address) for t in selection.refused),
        excluded=len(selection.excluded),
        hosts_scanned=len(result.scanned),
        not_scanned={str(a): why for a, why in sorted(result.not_scanned.items())},
        findings=findings,
        mails=tuple(outcomes),
        owners_not_found=unresolved_projects(findings),
        failed_batches=result.failed_batches,
        warnings=result.warnings,
        dry_run=dry_run,
    )


def _not_sent(report: OwnerReport, mail: OutgoingMail) -> MailOutcome:
    return MailOutcome(
        recipient=mail.recipient,
        intended=report.intended,
        owner_name=report.owner.name,
        findings=len(report.findings),
        message_id=mail.message_id,
        delivered=False,
        error="dry run: not sent",
        subject=mail.subject,
    )


def _record(metrics: Metrics, report: TickReport) -> None:
    metrics.targets.set(report.targets)
    metrics.hosts_scanned.inc(report.hosts_scanned)
    metrics.hosts_not_scanned.inc(len(report.not_scanned))
    metrics.inventory_age.set(report.inventory_age_seconds)
    metrics.owners_unresolved.set(len(report.owners_not_found))
    metrics.set_open_findings(count_by_service(report.findings))
    if report.dry_run:
        return
    if tick_problem(report) is None:
        metrics.ticks.labels(outcome="success").inc()
        metrics.last_success.set(report.finished_at.timestamp())
    else:
        metrics.ticks.labels(outcome="failure").inc()
    metrics.tick_duration.observe(report.duration_seconds)


def report_as_dict(report: TickReport) -> dict[str, Any]:
    """The tick report as plain JSON-ready data (for `scan --json` and the admin API)."""
    return {
        "run_id": report.run_id,
        "environment": report.environment,
        "dry_run": report.dry_run,
        "started_at": report.started_at.isoformat(),
        "finished_at": report.finished_at.isoformat(),
        "duration_seconds": round(report.duration_seconds, 3),
        "inventory": {
            "source": report.inventory_source,
            "age_seconds": round(report.inventory_age_seconds, 1),
            "stale_reason": report.inventory_stale_reason,
        },
        "targets": report.targets,
        "refused": list(report.refused),
        "excluded": report.excluded,
        "hosts_scanned": report.hosts_scanned,
        "not_scanned": dict(report.not_scanned),
        "failed_batches": report.failed_batches,
        "findings": [finding_as_dict(f) for f in report.findings],
        "mails": [dataclasses.asdict(m) for m in report.mails],
        "owners_not_found": list(report.owners_not_found),
        "summary_delivered": report.summary_delivered,
        "warnings": list(report.warnings),
    }


def finding_as_dict(finding: Finding) -> dict[str, Any]:
    target = finding.target
    return {
        "address": str(finding.address),
        "port": finding.port,
        "protocol": str(finding.protocol),
        "service": finding.service,
        "status": str(finding.status),
        "state": finding.state,
        "evidence": finding.evidence,
        "server_name": target.server_name,
        "server_id": target.server_id,
        "project_id": target.project_id,
        "project_name": target.project_name,
        "owner_name": target.owner.name,
        "owner_email": target.owner.email,
        "first_seen": finding.first_seen.isoformat(),
        "last_seen": finding.last_seen.isoformat(),
    }
