"""The finding lifecycle as tables: time is passed in, nothing is stored."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address

import pytest

from goalkeeper.lifecycle import (
    Coverage,
    FindingRecord,
    PortKey,
    plan_lifecycle,
    record_from_finding,
)
from goalkeeper.model import Finding, FindingStatus, Owner, PortSpec, ScanResult, Target, Transport
from goalkeeper.scope import Selection

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ACME = Owner(name="ACME Ltd", email="admin@acme.example", client_id="7")
BETA = Owner(name="Beta", email="ops@beta.example", client_id="8")
A, B = "203.0.113.5", "203.0.113.6"
TCP, UDP = Transport.TCP, Transport.UDP
PORTS: tuple[PortKey, ...] = ((6379, TCP), (27017, TCP), (53, UDP))
UDP_SKIPPED = "UDP not scanned (scan.privileged: false)"


def seen(
    address: str = A, port: int = 6379, owner: Owner = ACME, protocol: Transport = TCP
) -> Finding:
    """A finding as build_findings makes it this tick."""
    target = Target(address=ip_address(address), server_name="web-1", project_id="p1", owner=owner)
    return Finding(
        address=target.address,
        port=port,
        protocol=protocol,
        service="redis",
        target=target,
        first_seen=NOW,
        last_seen=NOW,
        evidence="syn-ack",
    )


def stored(
    address: str = A,
    port: int = 6379,
    *,
    first: timedelta = 10 * DAY,
    last: timedelta = DAY,
    notified: timedelta | None = DAY,
    resolved: timedelta | None = None,
    owner: Owner = ACME,
    protocol: Transport = TCP,
    unmonitored: str | None = None,
) -> FindingRecord:
    """A record as the store keeps it; every time is how long before NOW."""
    record = record_from_finding(seen(address, port, owner, protocol))
    return replace(
        record,
        first_seen=NOW - first,
        last_seen=NOW - last,
        last_notified_at=None if notified is None else NOW - notified,
        times_notified=0 if notified is None else 3,
        resolved_at=None if resolved is None else NOW - resolved,
        unmonitored_since=None if unmonitored is None else NOW - 3 * DAY,
        unmonitored_reason=unmonitored,
    )


@dataclass(frozen=True)
class Case:
    previous: tuple[FindingRecord, ...]
    current: tuple[Finding, ...]
    scanned: tuple[str, ...] = (A, B)
    ports: tuple[PortKey, ...] = PORTS
    skipped: dict[PortKey, str] = field(default_factory=dict)
    not_scanned: dict[str, str] = field(default_factory=dict)
    out_of_scope: dict[str, str] = field(default_factory=dict)
    reminder_days: float = 1
    notify_resolved: bool = True
    # expected: "address:port" of each
    statuses: dict[str, FindingStatus] = field(default_factory=dict)
    notified: tuple[str, ...] = ()
    resolved: tuple[str, ...] = ()
    resolved_to_notify: tuple[str, ...] = ()
    reopened: tuple[str, ...] = ()
    written: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()  # "address:port" told about by a mail still in the outbox
    unmonitored: dict[str, str] = field(default_factory=dict)  # "address:port" -> reason

    def coverage(self) -> Coverage:
        return Coverage(
            scanned=frozenset(ip_address(a) for a in self.scanned),
            ports=frozenset(self.ports) - frozenset(self.skipped),
            skipped=self.skipped,
            not_scanned={ip_address(a): why for a, why in self.not_scanned.items()},
            out_of_scope={ip_address(a): why for a, why in self.out_of_scope.items()},
        )


NEW, OPEN = FindingStatus.NEW, FindingStatus.OPEN
CASES = {
    "new": Case(
        previous=(),
        current=(seen(),),
        statuses={f"{A}:6379": NEW},
        notified=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "still open, reminder not due": Case(
        previous=(stored(notified=timedelta(hours=2)),),
        current=(seen(),),
        statuses={f"{A}:6379": OPEN},
        written=(f"{A}:6379",),
    ),
    "reminder due after a day": Case(
        previous=(stored(notified=DAY),),
        current=(seen(),),
        statuses={f"{A}:6379": OPEN},
        notified=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "reminder due a few minutes short of a day (tick jitter)": Case(
        previous=(stored(notified=DAY - timedelta(minutes=5)),),
        current=(seen(),),
        statuses={f"{A}:6379": OPEN},
        notified=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "weekly reminder not due after six days": Case(
        previous=(stored(notified=6 * DAY),),
        current=(seen(),),
        reminder_days=7,
        statuses={f"{A}:6379": OPEN},
        written=(f"{A}:6379",),
    ),
    "open but never notified (mail not sent yet)": Case(
        previous=(stored(notified=None),),
        current=(seen(),),
        statuses={f"{A}:6379": OPEN},
        notified=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "reminder_days 0 reminds every tick": Case(
        previous=(stored(notified=timedelta(minutes=1)),),
        current=(seen(),),
        reminder_days=0,
        statuses={f"{A}:6379": OPEN},
        notified=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "resolved when its host was scanned and it is gone": Case(
        previous=(stored(notified=timedelta(hours=2)), stored(port=27017)),
        current=(seen(),),
        statuses={f"{A}:6379": OPEN},
        resolved=(f"{A}:27017",),
        resolved_to_notify=(f"{A}:27017",),
        written=(f"{A}:6379", f"{A}:27017"),
    ),
    # Nothing false: resolved only when this exact address, port and protocol
    # was scanned now and found closed; anything else is no longer monitored, never resolved.
    "port taken off the scan list: unmonitored, not resolved": Case(
        previous=(stored(port=9200),),
        current=(),
        unmonitored={f"{A}:9200": "port no longer on the scan list"},
        written=(f"{A}:9200",),
    ),
    "UDP skipped (privileged: false): unmonitored, not resolved": Case(
        previous=(stored(port=53, protocol=UDP),),
        current=(),
        skipped={(53, UDP): UDP_SKIPPED},
        unmonitored={f"{A}:53": UDP_SKIPPED},
        written=(f"{A}:53",),
    ),
    "the same port on the other protocol is not this one": Case(
        previous=(stored(port=53, protocol=TCP),),
        current=(),
        unmonitored={f"{A}:53": "port no longer on the scan list"},
        written=(f"{A}:53",),
    ),
    "host timed out: unmonitored, not resolved": Case(
        previous=(stored(B),),
        current=(),
        scanned=(A,),
        not_scanned={B: "nmap host timeout"},
        unmonitored={f"{B}:6379": "host not scanned: nmap host timeout"},
        written=(f"{B}:6379",),
    ),
    "address out of scope: unmonitored, not resolved": Case(
        previous=(stored(B),),
        current=(),
        scanned=(A,),
        out_of_scope={B: "in scan.exclude"},
        unmonitored={f"{B}:6379": "address out of scope (in scan.exclude)"},
        written=(f"{B}:6379",),
    ),
    "address gone from the inventory: unmonitored, not resolved": Case(
        previous=(stored(B),),
        current=(),
        scanned=(A,),
        unmonitored={f"{B}:6379": "address no longer in the inventory"},
        written=(f"{B}:6379",),
    ),
    "exact UDP pair scanned and closed: resolved": Case(
        previous=(stored(port=53, protocol=UDP),),
        current=(),
        resolved=(f"{A}:53",),
        resolved_to_notify=(f"{A}:53",),
        written=(f"{A}:53",),
    ),
    "still unmonitored for the same reason: not written again": Case(
        previous=(stored(port=9200, unmonitored="port no longer on the scan list"),),
        current=(),
        unmonitored={f"{A}:9200": "port no longer on the scan list"},
    ),
    "unmonitored for a new reason: written with it": Case(
        previous=(stored(B, unmonitored="port no longer on the scan list"),),
        current=(),
        scanned=(A,),
        not_scanned={B: "nmap failed"},
        unmonitored={f"{B}:6379": "host not scanned: nmap failed"},
        written=(f"{B}:6379",),
    ),
    "unmonitored, seen open again: open, not new, no mail before a reminder is due": Case(
        previous=(
            stored(notified=timedelta(hours=2), unmonitored="port no longer on the scan list"),
        ),
        current=(seen(),),
        statuses={f"{A}:6379": OPEN},
        written=(f"{A}:6379",),
    ),
    "unmonitored, seen open again when a reminder is due: reminded": Case(
        previous=(stored(notified=DAY, unmonitored="port no longer on the scan list"),),
        current=(seen(),),
        statuses={f"{A}:6379": OPEN},
        notified=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "unmonitored, then scanned and closed: resolved as usual": Case(
        previous=(stored(B, unmonitored="host not scanned: nmap host timeout"),),
        current=(),
        resolved=(f"{B}:6379",),
        resolved_to_notify=(f"{B}:6379",),
        written=(f"{B}:6379",),
    ),
    "already resolved and still gone: nothing to do": Case(
        previous=(stored(resolved=2 * DAY),),
        current=(),
    ),
    "reopened when a resolved one comes back": Case(
        previous=(stored(resolved=2 * DAY, notified=3 * DAY),),
        current=(seen(),),
        statuses={f"{A}:6379": NEW},
        notified=(f"{A}:6379",),
        reopened=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "notify_resolved off: resolved, but not told": Case(
        previous=(stored(),),
        current=(),
        notify_resolved=False,
        resolved=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "a new owner hears of it at once": Case(
        previous=(stored(notified=timedelta(hours=1), owner=BETA),),
        current=(seen(),),
        statuses={f"{A}:6379": NEW},
        notified=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "owner e-mail differing only in case is the same owner": Case(
        previous=(
            stored(notified=timedelta(hours=1), owner=replace(ACME, email="Admin@ACME.example")),
        ),
        current=(seen(),),
        statuses={f"{A}:6379": OPEN},
        written=(f"{A}:6379",),
    ),
    # A mail still waiting (a crash, an SMTP outage): this tick's report replaces it, so
    # everything it said is said again, once, and is never left to a second mail.
    "a pending mail's finding is due even before its reminder": Case(
        previous=(stored(notified=timedelta(hours=2)),),
        current=(seen(),),
        pending=(f"{A}:6379",),
        statuses={f"{A}:6379": OPEN},
        notified=(f"{A}:6379",),
        written=(f"{A}:6379",),
    ),
    "a pending mail's finding on a host not scanned now is carried over": Case(
        previous=(stored(B, notified=None),),
        current=(seen(),),
        scanned=(A,),
        not_scanned={B: "nmap host timeout"},
        pending=(f"{B}:6379",),
        statuses={f"{A}:6379": NEW},
        notified=(f"{A}:6379", f"{B}:6379"),
        written=(f"{A}:6379", f"{B}:6379"),
        unmonitored={f"{B}:6379": "host not scanned: nmap host timeout"},
    ),
    "a pending mail's fix already resolved is told again": Case(
        previous=(stored(resolved=timedelta(hours=2)),),
        current=(),
        pending=(f"{A}:6379",),
        resolved_to_notify=(f"{A}:6379",),
    ),
    "a pending mail's fix is not told with notify_resolved off": Case(
        previous=(stored(resolved=timedelta(hours=2)),),
        current=(),
        pending=(f"{A}:6379",),
        notify_resolved=False,
    ),
}


def label(finding: Finding | FindingRecord) -> str:
    return f"{finding.address}:{finding.port}"


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_lifecycle(case: Case) -> None:
    plan = plan_lifecycle(
        {r.key: r for r in case.previous},
        case.current,
        case.coverage(),
        now=NOW,
        reminder_days=case.reminder_days,
        notify_resolved=case.notify_resolved,
        pending={(a, int(p), "tcp") for a, p in (k.split(":") for k in case.pending)},
    )
    assert {label(f): f.status for f in plan.current} == case.statuses
    assert tuple(label(f) for f in plan.to_notify) == case.notified
    assert tuple(label(f) for f in plan.resolved) == case.resolved
    assert tuple(label(f) for f in plan.resolved_to_notify) == case.resolved_to_notify
    assert tuple(label(f) for f in plan.reopened) == case.reopened
    assert tuple(label(r) for r in plan.upserts) == case.written
    assert {label(f): f.unmonitored_reason for f in plan.unmonitored} == case.unmonitored
    assert all(f.status == FindingStatus.RESOLVED for f in plan.resolved)
    assert all(f.status == FindingStatus.UNMONITORED for f in plan.unmonitored)
    written = {label(r): r for r in plan.upserts}
    for key, reason in case.unmonitored.items():
        if key in written:
            assert (written[key].resolved_at, written[key].unmonitored_reason) == (None, reason)
            assert written[key].status == FindingStatus.UNMONITORED
    for finding in (*plan.current, *plan.resolved):
        assert written[label(finding)].unmonitored_reason is None


def plan_one(previous: FindingRecord | None, current: Finding | None) -> FindingRecord:
    plan = plan_lifecycle(
        {previous.key: previous} if previous else {},
        [current] if current else [],
        Coverage(scanned=frozenset({ip_address(A)}), ports=frozenset(PORTS)),
        now=NOW,
        reminder_days=1,
        notify_resolved=True,
    )
    (record,) = plan.upserts
    return record


def test_new_record_starts_now_with_no_notifications() -> None:
    record = plan_one(None, replace(seen(), first_seen=NOW - DAY))
    assert (record.first_seen, record.last_seen, record.resolved_at) == (NOW, NOW, None)
    assert (record.times_notified, record.last_notified_at) == (0, None)
    assert (record.owner_email, record.server_name, record.evidence) == (
        ACME.email,
        "web-1",
        "syn-ack",
    )


def test_seen_again_keeps_history_and_takes_the_owner_at_last_sight() -> None:
    before = stored(first=10 * DAY, owner=BETA)
    record = plan_one(before, seen())
    assert record.first_seen == NOW - 10 * DAY
    assert record.last_seen == NOW
    assert (record.owner_name, record.owner_email) == (ACME.name, ACME.email)
    assert (record.times_notified, record.last_notified_at) == (3, NOW - DAY)


def test_reopened_keeps_first_seen_and_says_when_it_came_back() -> None:
    before = stored(first=30 * DAY, resolved=5 * DAY)
    record = plan_one(before, seen())
    assert (record.first_seen, record.resolved_at, record.reopened_at) == (
        NOW - 30 * DAY,
        None,
        NOW,
    )
    assert record.times_notified == 3


def test_resolved_record_is_otherwise_unchanged() -> None:
    before = stored()
    record = plan_one(before, None)
    assert record == replace(before, resolved_at=NOW)


def test_findings_in_mails_carry_the_stored_first_seen() -> None:
    plan = plan_lifecycle(
        {stored(first=4 * DAY).key: stored(first=4 * DAY)},
        [seen(), seen(B)],
        Coverage(scanned=frozenset({ip_address(A), ip_address(B)}), ports=frozenset(PORTS)),
        now=NOW,
        reminder_days=0,
        notify_resolved=True,
    )
    assert [(label(f), f.first_seen) for f in plan.to_notify] == [
        (f"{A}:6379", NOW - 4 * DAY),
        (f"{B}:6379", NOW),
    ]


def test_unmonitored_keeps_its_first_time_and_history() -> None:
    before = stored(B, first=20 * DAY, unmonitored="port no longer on the scan list")
    plan = plan_lifecycle(
        {before.key: before},
        [],
        Coverage(scanned=frozenset(), ports=frozenset(PORTS), not_scanned={ip_address(B): "x"}),
        now=NOW,
        reminder_days=1,
        notify_resolved=True,
    )
    (record,) = plan.upserts
    assert record == replace(before, unmonitored_reason="host not scanned: x")
    assert record.unmonitored_since == NOW - 3 * DAY  # since it was first left unscanned


def test_seen_again_clears_unmonitored() -> None:
    before = stored(unmonitored="port no longer on the scan list")
    record = plan_one(before, seen())
    assert (record.unmonitored_since, record.unmonitored_reason, record.status) == (
        None,
        None,
        FindingStatus.OPEN,
    )


def test_record_round_trips_to_a_finding() -> None:
    record = stored(resolved=DAY)
    finding = record.to_finding()
    assert finding.status == FindingStatus.RESOLVED
    assert finding.key == record.key
    assert finding.owner == ACME
    assert record_from_finding(finding, record) == replace(record, resolved_at=None)


def test_coverage_of_a_tick_names_why_each_address_was_not_looked_at() -> None:
    def at(address: str) -> Target:
        return Target(address=ip_address(address))

    ports = [PortSpec(6379, TCP, "redis"), PortSpec(53, UDP, "dns")]
    result = ScanResult(
        scanned=frozenset({ip_address(A)}),
        open_ports=(),
        not_scanned={ip_address(B): "nmap host timeout"},
        skipped={(53, UDP): UDP_SKIPPED},
    )
    selection = Selection(
        targets=(at(A), at(B)), refused=(at("198.51.100.1"),), excluded=(at("198.51.100.2"),)
    )
    coverage = Coverage.of_tick(result, selection, ports)
    assert coverage.ports == {(6379, TCP)}
    assert coverage.why_not(ip_address(A), 6379, TCP) is None
    assert coverage.why_not(ip_address(A), 53, UDP) == UDP_SKIPPED
    assert coverage.why_not(ip_address(A), 9200, TCP) == "port no longer on the scan list"
    assert coverage.why_not(ip_address(B), 6379, TCP) == "host not scanned: nmap host timeout"
    assert (
        coverage.why_not(ip_address("198.51.100.1"), 6379, TCP)
        == "address out of scope (outside scan.allowed_networks)"
    )
    assert (
        coverage.why_not(ip_address("198.51.100.2"), 6379, TCP)
        == "address out of scope (in scan.exclude)"
    )
    assert coverage.why_not(ip_address("198.51.100.3"), 6379, TCP) == (
        "address no longer in the inventory"
    )
