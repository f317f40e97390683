"""Plain JSON-ready views of findings and tick reports, for `scan --json`, `findings` and the API.

Pure: no I/O. Field names here are an interface operators script against; keep them stable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from goalkeeper.exceptions import Acknowledgement
from goalkeeper.lifecycle import FindingRecord
from goalkeeper.model import Finding, OwnerLookup, TickReport
from goalkeeper.rootcause import Cause


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
            "regions_down": dict(report.regions_down),
            "owner_lookup": _owner_lookup(report.owner_lookup),
        },
        "targets": report.targets,
        "targets_by_region": dict(report.targets_by_region),
        "refused": list(report.refused),
        "excluded": report.excluded,
        "hosts_scanned": report.hosts_scanned,
        "not_scanned": dict(report.not_scanned),
        "failed_batches": report.failed_batches,
        "findings": [finding_as_dict(f) for f in report.findings],
        "resolved": [finding_as_dict(f) for f in report.resolved],
        "unmonitored": [finding_as_dict(f) for f in report.unmonitored],
        "mails": [dataclasses.asdict(m) for m in report.mails],
        "owners_not_found": list(report.owners_not_found),
        "summary_delivered": report.summary_delivered,
        "notification_failures": list(report.notification_failures),
        "warnings": list(report.warnings),
    }


def _owner_lookup(lookup: OwnerLookup | None) -> dict[str, Any] | None:
    """How billing resolved owners; None for a source that carries its own (static)."""
    if lookup is None:
        return None
    return {
        "state": str(lookup.state),
        "projects": lookup.projects,
        "resolved": lookup.resolved,
        "listed": lookup.listed,
        "share": lookup.share,
        "min_share": lookup.min_share,
        "incident": lookup.incident,
    }


def finding_as_dict(finding: Finding) -> dict[str, Any]:
    target = finding.target
    return {
        "address": str(finding.address),
        "port": finding.port,
        "protocol": str(finding.protocol),
        "service": finding.service,
        "status": str(finding.status),
        "unmonitored_reason": finding.unmonitored_reason,
        "state": "open",  # kept for readers of earlier output; `status` says where it stands
        "grade": str(finding.grade) if finding.grade else None,
        "evidence": finding.evidence,
        "cause": cause_as_dict(finding.cause),
        "exception": exception_as_dict(finding.acknowledged),
        "exception_ended": exception_as_dict(finding.ended),
        "exception_not_honoured": finding.not_honoured,
        "allow_problem": target.allow_problem,  # its goalkeeper.allow could not be read
        "server_name": target.server_name,
        "region": target.region,
        "server_id": target.server_id,
        "project_id": target.project_id,
        "project_name": target.project_name,
        "owner_name": target.owner.name,
        "owner_email": target.owner.email,
        "first_seen": finding.first_seen.isoformat(),
        "last_seen": finding.last_seen.isoformat(),
    }


def cause_as_dict(text: str | None) -> dict[str, Any]:
    """Finding.cause as data: {"kind", "port_id", "rules": [DESIGN §8's fields]}; a finding
    stored before causes were traced, or without a firewall known, is `unknown`."""
    cause = Cause.from_json(text)
    return {
        "kind": cause.kind,
        "port_id": cause.port_id or None,
        "rules": [dataclasses.asdict(rule) for rule in cause.rules],
    }


def exception_as_dict(ack: Acknowledgement | None) -> dict[str, Any] | None:
    """The exception acknowledging a finding (DESIGN §9): whose, why, until (capped) and since."""
    if ack is None:
        return None
    return {
        "source": ack.source,
        "reason": ack.reason,
        "until": ack.until.isoformat(),
        "requested_until": ack.requested_until.isoformat(),
        "capped": ack.capped,
        "since": ack.since.isoformat(),
    }


def record_as_dict(record: FindingRecord) -> dict[str, Any]:
    """A stored finding, as `goalkeeper findings --json` and GET /findings show it."""
    return {
        "address": str(record.address),
        "port": record.port,
        "protocol": str(record.protocol),
        "service": record.service,
        # open, acknowledged (with the exception), unmonitored (with the reason) or resolved
        "status": str(record.status),
        "unmonitored_reason": record.unmonitored_reason,
        "unmonitored_since": record.unmonitored_since.isoformat()
        if record.unmonitored_since
        else None,
        "grade": record.grade,
        "evidence": record.evidence,
        "cause": cause_as_dict(record.cause),
        "exception": exception_as_dict(record.acknowledgement()),
        "server_name": record.server_name,
        "project_id": record.project_id,
        "project_name": record.project_name,
        "owner_name": record.owner_name,
        "owner_email": record.owner_email,
        "first_seen": record.first_seen.isoformat(),
        "last_seen": record.last_seen.isoformat(),
        "resolved_at": record.resolved_at.isoformat() if record.resolved_at else None,
        "times_notified": record.times_notified,
        "last_notified_at": record.last_notified_at.isoformat()
        if record.last_notified_at
        else None,
    }
