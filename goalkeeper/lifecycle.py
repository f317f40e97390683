"""Pure finding lifecycle: what this tick's findings mean against what was known before.

It decides which findings are new, open, reopened, resolved, acknowledged (an exception covers
them, DESIGN §9) or no longer monitored, which of them a mail mentions, and which records to
write (the rules: `plan_lifecycle`). No I/O, no clock (the tick's time is `now`), no database
types: the state store persists what this module decides, and the pipeline renders it. Past
300 lines: the rules are one decision, kept together.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import TypeAlias

from goalkeeper.exceptions import (
    NO_EXCEPTIONS,
    Acknowledgement,
    ExceptionPolicy,
    Exposure,
    Source,
    judge,
)
from goalkeeper.mailaddress import customer_owner
from goalkeeper.model import (
    HOST_NOT_SCANNED,
    NOT_IN_INVENTORY,
    OUT_OF_SCOPE,
    PORT_REMOVED,
    Finding,
    FindingStatus,
    IPAddress,
    Owner,
    PortSpec,
    ScanResult,
    Target,
    Transport,
    parse_grade,
)
from goalkeeper.scope import Selection

FindingKey: TypeAlias = tuple[str, int, str]  # (address, port, protocol), as Finding.key
PortKey: TypeAlias = tuple[int, Transport]

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
    state: str = "open"  # the stored column; only open ports become findings
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
    unmonitored_since: datetime | None = None  # set while the tick does not look at it
    unmonitored_reason: str | None = None
    # The exception that acknowledges it (DESIGN §9); all None while none does.
    exception_source: Source | None = None
    exception_reason: str | None = None
    exception_until: date | None = None  # capped at notify.max_exception_days
    exception_requested_until: date | None = None
    acknowledged_since: datetime | None = None
    notified_grade: str | None = None  # the grade when a mail about it was last sent

    @property
    def key(self) -> FindingKey:
        return (str(self.address), self.port, str(self.protocol))

    @property
    def is_open(self) -> bool:
        """Not seen closed: an unmonitored record is still open, as far as anyone knows."""
        return self.resolved_at is None

    @property
    def status(self) -> FindingStatus:
        if not self.is_open:
            return FindingStatus.RESOLVED
        if self.unmonitored_reason is not None:
            return FindingStatus.UNMONITORED
        if self.exception_source is not None:
            return FindingStatus.ACKNOWLEDGED
        return FindingStatus.OPEN

    def acknowledgement(self) -> Acknowledgement | None:
        """The exception stored as acknowledging it, or None."""
        if (
            self.exception_source is None
            or self.exception_until is None
            or self.acknowledged_since is None
        ):
            return None
        return Acknowledgement(
            source=self.exception_source,
            reason=self.exception_reason or "",
            until=self.exception_until,
            requested_until=self.exception_requested_until or self.exception_until,
            since=self.acknowledged_since,
        )

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
            evidence=self.evidence,
            grade=parse_grade(self.grade),
            cause=self.cause,
            unmonitored_reason=self.unmonitored_reason,
            acknowledged=self.acknowledgement(),
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
        notified_grade=previous.notified_grade if previous else None,
        grade=finding.grade,
        cause=finding.cause,
        exception_source=ack.source if (ack := finding.acknowledged) else None,
        exception_reason=ack.reason if ack else None,
        exception_until=ack.until if ack else None,
        exception_requested_until=ack.requested_until if ack else None,
        acknowledged_since=ack.since if ack else None,
    )


@dataclass(frozen=True, slots=True)
class Coverage:
    """What one tick really looked at, and why it did not look at the rest.

    Every host in `scanned` was scanned to the end for every port in `ports` (the tick's port
    list less what the scanner `skipped`). Hosts elsewhere were `not_scanned` (timed out, nmap
    failed), `out_of_scope` (refused or excluded), or are not in the inventory any more.
    """

    scanned: frozenset[IPAddress]
    ports: frozenset[PortKey]
    skipped: Mapping[PortKey, str] = field(default_factory=dict)
    not_scanned: Mapping[IPAddress, str] = field(default_factory=dict)
    out_of_scope: Mapping[IPAddress, str] = field(default_factory=dict)

    @classmethod
    def of_tick(
        cls, result: ScanResult, selection: Selection, ports: Sequence[PortSpec]
    ) -> Coverage:
        """The hosts the tick scanned to the end, for its ports less those the scanner skipped;
        and why it looked at nothing else."""
        out_of_scope = {t.address: "outside scan.allowed_networks" for t in selection.refused}
        out_of_scope.update((t.address, "in scan.exclude") for t in selection.excluded)
        return cls(
            scanned=result.scanned,
            ports=frozenset(
                (p.port, p.protocol) for p in ports if (p.port, p.protocol) not in result.skipped
            ),
            skipped=result.skipped,
            not_scanned=result.not_scanned,
            out_of_scope=out_of_scope,
        )

    def why_not(self, address: IPAddress, port: int, protocol: Transport) -> str | None:
        """None when this exact address, port and protocol was scanned; else why it was not."""
        if address in self.scanned:
            if (port, protocol) in self.ports:
                return None
            skipped = self.skipped.get((port, protocol))
            if skipped is not None:
                return skipped
            return PORT_REMOVED
        if address in self.not_scanned:
            return f"{HOST_NOT_SCANNED}: {self.not_scanned[address]}"
        if address in self.out_of_scope:
            return f"{OUT_OF_SCOPE} ({self.out_of_scope[address]})"
        return NOT_IN_INVENTORY


@dataclass(frozen=True, slots=True)
class LifecyclePlan:
    """What one tick decided.

    `current`: every finding seen now, with its status and the stored `first_seen`.
    `to_notify`: the findings a mail should list as exposed (new, reopened, reminders).
    `resolved`: every finding resolved by this tick; `resolved_to_notify` is the same, or empty
    when `notify_resolved` is off. `reopened` is the part of `to_notify` that had been resolved.
    `unmonitored`: every open record given that this tick did not look at (status UNMONITORED,
    with the reason), whether it became so now or earlier; it is never mailed.
    `upserts`: the records to write; untouched records are not in it.
    `acknowledged`: the part of `current` an exception covers: never in `to_notify`, listed in
    a report that goes out to its owner anyway.
    """

    current: tuple[Finding, ...]
    to_notify: tuple[Finding, ...]
    resolved: tuple[Finding, ...]
    resolved_to_notify: tuple[Finding, ...]
    reopened: tuple[Finding, ...]
    upserts: tuple[FindingRecord, ...]
    unmonitored: tuple[Finding, ...] = ()
    acknowledged: tuple[Finding, ...] = ()


def reminder_due(last_notified_at: datetime | None, *, now: datetime, reminder_days: float) -> bool:
    if last_notified_at is None:
        return True
    period = timedelta(days=reminder_days) * (1 - REMINDER_SLACK)
    return now - last_notified_at >= period


def _seen_again(
    finding: Finding,
    record: FindingRecord | None,
    *,
    now: datetime,
    due: bool,
    exceptions: ExceptionPolicy,
) -> tuple[Finding, FindingRecord, bool]:
    """A finding seen this tick: its status, the record to write, and whether to mail it."""
    previous = record.acknowledgement() if record is not None and record.is_open else None
    exposure = Exposure(
        address=finding.address,
        port=finding.port,
        protocol=str(finding.protocol),
        project_id=finding.target.project_id,
        grade=finding.grade,
        customer=finding.target.allow,
    )
    judgement = judge(exposure, policy=exceptions, previous=previous, now=now)
    if judgement.acknowledged is not None:
        decided = replace(
            finding,
            status=FindingStatus.ACKNOWLEDGED,
            first_seen=record.first_seen if record else now,
            last_seen=now,
            acknowledged=judgement.acknowledged,
        )
        stored = record_from_finding(decided, record)
        if record is not None and not record.is_open:
            stored = replace(stored, reopened_at=now)
        return decided, stored, False
    # An exception that covered it until now has ended: told at once, as a port open again.
    finding = replace(finding, ended=previous, not_honoured=judgement.not_honoured)
    due = due or previous is not None
    if record is None:
        decided = replace(finding, status=FindingStatus.NEW, first_seen=now, last_seen=now)
        return decided, record_from_finding(decided), True
    if not record.is_open:
        decided = replace(
            finding, status=FindingStatus.NEW, first_seen=record.first_seen, last_seen=now
        )
        return decided, replace(record_from_finding(decided, record), reopened_at=now), True
    new_owner = record.owner().mail_key != finding.owner.mail_key
    due = due or worsened(record, finding)
    decided = replace(
        finding,
        status=FindingStatus.NEW if new_owner else FindingStatus.OPEN,
        first_seen=record.first_seen,
        last_seen=now,
    )
    return decided, record_from_finding(decided, record), new_owner or due


def worsened(record: FindingRecord, finding: Finding) -> bool:
    """Whether verification now grades it worse than its owner was last told (reachable ->
    unauthenticated): news mailed at once. A finding not verified this tick never is, nor one
    never graded before (verification switched on is no reason to mail every owner at once)."""
    told = parse_grade(record.notified_grade or record.grade)
    return finding.grade is not None and told is not None and finding.grade.rank < told.rank


def _not_seen(
    record: FindingRecord, coverage: Coverage, *, now: datetime
) -> tuple[FindingRecord, bool]:
    """An open record not seen this tick: resolved if its port was scanned, else unmonitored;
    and whether the record changed (an unchanged reason is not written again every tick)."""
    why = coverage.why_not(record.address, record.port, record.protocol)
    if why is None:  # closed: any exception on it has nothing left to do
        return replace(
            record,
            resolved_at=now,
            unmonitored_since=None,
            unmonitored_reason=None,
            exception_source=None,
            exception_reason=None,
            exception_until=None,
            exception_requested_until=None,
            acknowledged_since=None,
        ), True
    if record.unmonitored_reason == why:
        return record, False
    since = record.unmonitored_since or now
    return replace(record, unmonitored_since=since, unmonitored_reason=why), True


def _first_of_each(current: Sequence[Finding]) -> dict[FindingKey, Finding]:
    seen: dict[FindingKey, Finding] = {}
    for finding in current:
        seen.setdefault(finding.key, finding)  # a duplicate key: the first one wins
    return seen


def plan_lifecycle(
    previous: Mapping[FindingKey, FindingRecord],
    current: Sequence[Finding],
    coverage: Coverage,
    *,
    now: datetime,
    reminder_days: float,
    notify_resolved: bool,
    pending: Collection[FindingKey] = (),
    exceptions: ExceptionPolicy = NO_EXCEPTIONS,
) -> LifecyclePlan:
    """Decide this tick from the stored records, the findings and what was really looked at.

    `coverage` says which hosts were scanned to the end, for which ports and protocols. The rules:

    - a finding with no record is NEW and is notified;
    - an open record seen again is OPEN, notified again only when a reminder is due;
    - a resolved record seen again is reopened: status NEW, notified, `first_seen` kept (the history
      of that port on that address survives), `reopened_at` set;
    - an open record seen again under a different owner is notified at once, as NEW: the new owner
      has never heard of it;
    - an open record not seen, whose exact address, port and protocol this tick scanned, becomes
      RESOLVED (`resolved_at=now`) and is mentioned once, in the "fixed" part, when
      `notify_resolved`;
    - any other open record not seen (its port off the list, its protocol skipped, its host timed
      out, out of scope or gone from the inventory) becomes UNMONITORED, with the reason: kept,
      shown, never resolved and never thanked for (nothing false: an unscanned port is never called
      fixed); seen open again it is simply open (a reminder only when one is due), scanned and
      closed it resolves;
    - an open record seen again with a worse grade than its owner was last told (reachable ->
      unauthenticated, `worsened`) is notified at once, as OPEN;
    - a finding that a mail still waiting in the outbox tells about (`pending`) is due again, seen
      or not: this tick's report carries it and replaces that unsent mail (the store marks the old
      one superseded), so an owner gets one current report, never the old one and the new one;
    - a finding seen open that a valid exception covers (`exceptions`, and the customer's own on
      its target) is ACKNOWLEDGED: never notified of its own, whatever is due; when that
      exception ends (its until passed, or it was removed) the finding is OPEN again and notified
      at once, carrying the exception that ended; acknowledged when it closes, it resolves
      without a thank-you (it was never reported as a problem while accepted).
    """
    waiting = frozenset(pending)
    seen = _first_of_each(current)

    findings: list[Finding] = []
    to_notify: list[Finding] = []
    reopened: list[Finding] = []
    upserts: list[FindingRecord] = []
    for key, finding in seen.items():
        record = previous.get(key)
        decided, stored, notify = _seen_again(
            finding,
            record,
            now=now,
            due=key in waiting
            or reminder_due(
                record.last_notified_at if record else None, now=now, reminder_days=reminder_days
            ),
            exceptions=exceptions,
        )
        if record is not None and not record.is_open:
            reopened.append(decided)
        findings.append(decided)
        upserts.append(stored)
        if notify:
            to_notify.append(decided)

    resolved: list[Finding] = []
    silently = {  # open records an exception covers, not seen: resolved without a thank-you
        key for key, record in previous.items() if record.exception_source is not None
    }
    unmonitored: list[Finding] = []
    carried: list[Finding] = []  # told about by a waiting mail that this tick's report replaces
    for key, record in previous.items():
        if key in seen:
            continue
        if record.is_open:
            record, changed = _not_seen(record, coverage, now=now)
            if changed:
                upserts.append(record)
            if record.is_open:
                unmonitored.append(record.to_finding())
            else:
                resolved.append(record.to_finding())
                continue
        if key in waiting and (record.is_open or notify_resolved):
            carried.append(record.to_finding())
    resolved_to_notify = (
        *(f for f in resolved if f.key not in silently),
        *(f for f in carried if f.status == FindingStatus.RESOLVED),
    )

    return LifecyclePlan(
        current=tuple(findings),
        to_notify=(*to_notify, *(f for f in carried if f.status != FindingStatus.RESOLVED)),
        resolved=tuple(resolved),
        resolved_to_notify=resolved_to_notify if notify_resolved else (),
        reopened=tuple(reopened),
        upserts=tuple(upserts),
        unmonitored=tuple(unmonitored),
        acknowledged=tuple(f for f in findings if f.status == FindingStatus.ACKNOWLEDGED),
    )
