"""Pure finding lifecycle: what this tick's findings mean against what was known before.

Given the stored records, this tick's findings and the addresses that were really scanned, decide
which findings are new, still open, reopened or resolved, which of them a mail should mention, and
which records to write. No I/O, no clock (the tick's time is `now`), no database types: the state
store persists what this module decides, and the pipeline renders it.

Rules (DESIGN.md issue 5):
- a finding with no record is NEW and is notified;
- an open record seen again is OPEN, notified again only when a reminder is due;
- a resolved record seen again is reopened: status NEW, notified, `first_seen` kept (the history
  of that port on that address survives), `reopened_at` set;
- an open record seen again under a different owner is notified at once, as NEW: the new owner
  has never heard of it;
- an open record not seen on an address that WAS scanned becomes RESOLVED (`resolved_at=now`) and
  is mentioned once, in the "fixed" part, when `notify_resolved`;
- a record on an address that was NOT scanned is left exactly as it was (a timeout is not a fix);
- a finding that a mail still waiting in the outbox tells about (`pending`) is due again, seen
  or not: this tick's report carries it and replaces that unsent mail (the store marks the old
  one superseded), so an owner gets one current report, never the old one and the new one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeAlias

from goalkeeper.mailaddress import customer_owner
from goalkeeper.model import (
    Finding,
    FindingStatus,
    IPAddress,
    Owner,
    Target,
    Transport,
)

FindingKey: TypeAlias = tuple[str, int, str]  # (address, port, protocol), as Finding.key

# A reminder counts as due slightly before a whole period has passed: ticks fire a few
# milliseconds or minutes apart from day to day, and `reminder_days: 1` must mean every daily
# tick, not every other one.
REMINDER_SLACK = 0.05


@dataclass(frozen=True, slots=True)
class FindingRecord:
    """A finding as the state store keeps it, across ticks.

    `resolved_at is None` while the port is open. `times_notified` and `last_notified_at` count
    only mails that were really sent; `last_notified_at` is the time of the tick that decided the
    mail, so the cadence does not drift by the seconds a send takes.
    """

    address: IPAddress
    port: int
    protocol: Transport
    service: str
    first_seen: datetime
    last_seen: datetime
    state: str = "open"
    evidence: str = ""
    server_id: str = ""
    server_name: str = ""
    project_id: str = ""
    project_name: str = ""
    owner_name: str | None = None
    owner_email: str | None = None
    owner_client_id: str | None = None
    resolved_at: datetime | None = None
    reopened_at: datetime | None = None
    times_notified: int = 0
    last_notified_at: datetime | None = None
    grade: str | None = None
    cause: str | None = None

    @property
    def key(self) -> FindingKey:
        return (str(self.address), self.port, str(self.protocol))

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    @property
    def status(self) -> FindingStatus:
        return FindingStatus.OPEN if self.is_open else FindingStatus.RESOLVED

    def owner(self) -> Owner:
        # Checked again: a row written before the address check may hold one that cannot be used.
        return customer_owner(self.owner_name, self.owner_email, self.owner_client_id)

    def to_finding(self, status: FindingStatus | None = None) -> Finding:
        """The record as a Finding, for a report (`status` defaults to open/resolved)."""
        return Finding(
            address=self.address,
            port=self.port,
            protocol=self.protocol,
            service=self.service,
            target=Target(
                address=self.address,
                server_name=self.server_name,
                server_id=self.server_id,
                project_id=self.project_id,
                project_name=self.project_name,
                owner=self.owner(),
            ),
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            status=status or self.status,
            state=self.state,
            evidence=self.evidence,
            grade=self.grade,
            cause=self.cause,
        )


def record_from_finding(finding: Finding, previous: FindingRecord | None = None) -> FindingRecord:
    """What to store for a finding seen now; notification counters carry over from `previous`."""
    target = finding.target
    return FindingRecord(
        address=finding.address,
        port=finding.port,
        protocol=finding.protocol,
        service=finding.service,
        first_seen=finding.first_seen,
        last_seen=finding.last_seen,
        state=finding.state,
        evidence=finding.evidence,
        server_id=target.server_id,
        server_name=target.server_name,
        project_id=target.project_id,
        project_name=target.project_name,
        owner_name=target.owner.name,
        owner_email=target.owner.email,
        owner_client_id=target.owner.client_id,
        resolved_at=None,
        reopened_at=previous.reopened_at if previous else None,
        times_notified=previous.times_notified if previous else 0,
        last_notified_at=previous.last_notified_at if previous else None,
        grade=finding.grade,
        cause=finding.cause,
    )


@dataclass(frozen=True, slots=True)
class LifecyclePlan:
    """What one tick decided.

    `current`: every finding seen now, with its status and the stored `first_seen`.
    `to_notify`: the findings a mail should list as exposed (new, reopened, reminders).
    `resolved`: every finding resolved by this tick; `resolved_to_notify` is the same, or empty
    when `notify_resolved` is off. `reopened` is the part of `to_notify` that had been resolved.
    `upserts`: the records to write; untouched records are not in it.
    """

    current: tuple[Finding, ...]
    to_notify: tuple[Finding, ...]
    resolved: tuple[Finding, ...]
    resolved_to_notify: tuple[Finding, ...]
    reopened: tuple[Finding, ...]
    upserts: tuple[FindingRecord, ...]


def reminder_due(last_notified_at: datetime | None, *, now: datetime, reminder_days: float) -> bool:
    if last_notified_at is None:
        return True
    period = timedelta(days=reminder_days) * (1 - REMINDER_SLACK)
    return now - last_notified_at >= period


def plan_lifecycle(
    previous: Mapping[FindingKey, FindingRecord],
    current: Sequence[Finding],
    scanned: Collection[IPAddress],
    *,
    now: datetime,
    reminder_days: float,
    notify_resolved: bool,
    pending: Collection[FindingKey] = (),
) -> LifecyclePlan:
    waiting = pending if isinstance(pending, set | frozenset) else set(pending)
    seen: dict[FindingKey, Finding] = {}
    for finding in current:
        seen.setdefault(finding.key, finding)  # a duplicate key: the first one wins

    findings: list[Finding] = []
    to_notify: list[Finding] = []
    reopened: list[Finding] = []
    upserts: list[FindingRecord] = []
    for key, finding in seen.items():
        record = previous.get(key)
        if record is None:
            decided = replace(finding, status=FindingStatus.NEW, first_seen=now, last_seen=now)
            notify = True
            stored = record_from_finding(decided)
        elif not record.is_open:
            decided = replace(
                finding, status=FindingStatus.NEW, first_seen=record.first_seen, last_seen=now
            )
            notify = True
            stored = replace(record_from_finding(decided, record), reopened_at=now)
            reopened.append(decided)
        else:
            new_owner = record.owner().mail_key != finding.owner.mail_key
            decided = replace(
                finding,
                status=FindingStatus.NEW if new_owner else FindingStatus.OPEN,
                first_seen=record.first_seen,
                last_seen=now,
            )
            notify = (
                new_owner
                or key in waiting
                or reminder_due(record.last_notified_at, now=now, reminder_days=reminder_days)
            )
            stored = record_from_finding(decided, record)
        findings.append(decided)
        upserts.append(stored)
        if notify:
            to_notify.append(decided)

    scanned_set = scanned if isinstance(scanned, set | frozenset) else set(scanned)
    resolved: list[Finding] = []
    carried: list[Finding] = []  # told about by a waiting mail that this tick's report replaces
    for key, record in previous.items():
        if key in seen:
            continue
        if record.is_open and record.address in scanned_set:
            upserts.append(replace(record, resolved_at=now))
            resolved.append(record.to_finding(FindingStatus.RESOLVED))
        elif key in waiting and (record.is_open or notify_resolved):
            carried.append(record.to_finding())
    resolved_to_notify = (*resolved, *(f for f in carried if f.status == FindingStatus.RESOLVED))

    return LifecyclePlan(
        current=tuple(findings),
        to_notify=(*to_notify, *(f for f in carried if f.status != FindingStatus.RESOLVED)),
        resolved=tuple(resolved),
        resolved_to_notify=resolved_to_notify if notify_resolved else (),
        reopened=tuple(reopened),
        upserts=tuple(upserts),
    )
