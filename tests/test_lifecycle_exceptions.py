"""The lifecycle of acknowledged findings (DESIGN §9), with a fake clock.

Covered: no mail of its own, whatever is due; the exception's end (its date, or removed) is a
normal open finding told at once; closed while acknowledged: resolved without a thank-you; the
cap counts from the first day; an `unauthenticated` grade is not silenced by a customer.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from ipaddress import ip_address, ip_network

from goalkeeper.exceptions import Allowance, ExceptionPolicy, ProviderException
from goalkeeper.lifecycle import Coverage, FindingRecord, LifecyclePlan, plan_lifecycle
from goalkeeper.model import Finding, FindingStatus, Grade, Owner, Target, Transport

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ACME = Owner(name="ACME Ltd", email="admin@acme.example")
ADDRESS = ip_address("203.0.113.5")
DNS = Allowance(frozenset({(53, "udp")}), date(2027, 3, 31), "public DNS")
KEY = (str(ADDRESS), 53, "udp")


def seen(allow: Allowance | None = DNS, *, grade: Grade | None = None) -> Finding:
    target = Target(address=ADDRESS, server_id="s1", project_id="p1", owner=ACME, allow=allow)
    return Finding(ADDRESS, 53, Transport.UDP, "dns", target, NOW, NOW, grade=grade)


def tick(
    previous: FindingRecord | None,
    finding: Finding | None,
    *,
    now: datetime = NOW,
    policy: ExceptionPolicy = ExceptionPolicy(),  # noqa: B008 - frozen, never changed
    pending: tuple[tuple[str, int, str], ...] = (),
) -> LifecyclePlan:
    coverage = Coverage(scanned=frozenset({ADDRESS}), ports=frozenset({(53, Transport.UDP)}))
    return plan_lifecycle(
        {KEY: previous} if previous else {},
        [replace(finding, first_seen=now, last_seen=now)] if finding else [],
        coverage,
        now=now,
        reminder_days=1,
        notify_resolved=True,
        pending=pending,
        exceptions=policy,
    )


def record_of(plan: LifecyclePlan) -> FindingRecord:
    (record,) = plan.upserts
    return record


def test_a_new_finding_an_exception_covers_is_acknowledged_and_not_mailed() -> None:
    plan = tick(None, seen())
    (finding,) = plan.current
    assert finding.status is FindingStatus.ACKNOWLEDGED
    assert plan.acknowledged == plan.current
    assert plan.to_notify == ()
    record = record_of(plan)
    assert record.status is FindingStatus.ACKNOWLEDGED
    assert (record.exception_source, record.exception_reason, record.exception_until) == (
        "customer",
        "public DNS",
        date(2027, 3, 31),
    )
    assert record.to_finding().acknowledged == finding.acknowledged


def test_an_acknowledged_finding_gets_no_reminder_even_when_one_is_due_or_a_mail_waits() -> None:
    first = record_of(tick(None, seen()))
    later = tick(first, seen(), now=NOW + 30 * DAY, pending=(KEY,))
    assert later.to_notify == ()
    assert later.current[0].status is FindingStatus.ACKNOWLEDGED
    assert record_of(later).acknowledged_since == NOW  # still counted from the first day


def test_an_open_finding_covered_now_is_acknowledged_from_now() -> None:
    open_record = record_of(tick(None, seen(allow=None)))
    assert open_record.status is FindingStatus.OPEN
    plan = tick(open_record, seen(), now=NOW + 2 * DAY)
    assert plan.to_notify == ()
    assert record_of(plan).acknowledged_since == NOW + 2 * DAY


def test_past_its_until_day_the_finding_is_open_again_and_told_at_once() -> None:
    acked = record_of(tick(None, seen()))
    on_the_day = tick(acked, seen(), now=datetime(2027, 3, 31, 23, 0, tzinfo=UTC))
    assert on_the_day.to_notify == ()  # the until day is still covered
    after = tick(record_of(on_the_day), seen(), now=datetime(2027, 4, 1, 6, 0, tzinfo=UTC))
    (finding,) = after.to_notify
    assert finding.status is FindingStatus.OPEN
    assert finding.ended is not None and finding.ended.until == date(2027, 3, 31)
    record = record_of(after)
    assert record.status is FindingStatus.OPEN and record.exception_source is None
    # The next tick: a plain open finding, reminded as usual, "ended" said only once.
    next_day = tick(record, seen(), now=datetime(2027, 4, 2, 6, 0, tzinfo=UTC))
    assert next_day.current[0].ended is None


def test_an_exception_removed_ends_at_once_even_with_no_reminder_due() -> None:
    acked = replace(record_of(tick(None, seen())), last_notified_at=NOW)
    plan = tick(acked, seen(allow=None), now=NOW + DAY / 4)
    (finding,) = plan.to_notify
    assert finding.ended is not None and finding.ended.reason == "public DNS"


def test_closed_while_acknowledged_it_resolves_without_a_thank_you() -> None:
    acked = record_of(tick(None, seen()))
    plan = tick(acked, None, now=NOW + DAY)
    assert [f.key for f in plan.resolved] == [KEY]
    assert plan.resolved_to_notify == ()
    record = record_of(plan)
    assert record.resolved_at == NOW + DAY and record.exception_source is None


def test_an_exception_on_a_port_that_is_closed_does_nothing() -> None:
    plan = tick(None, None)
    assert plan == tick(None, None, policy=ExceptionPolicy())
    assert (plan.current, plan.upserts, plan.to_notify) == ((), (), ())


def test_a_capped_exception_ends_max_days_after_its_first_day() -> None:
    far = replace(DNS, until=date(2099, 1, 1))
    policy = ExceptionPolicy(max_days=30)
    acked = record_of(tick(None, seen(far), policy=policy))
    assert acked.exception_until == date(2027, 1, 1)
    assert acked.exception_requested_until == date(2099, 1, 1)
    still = tick(acked, seen(far), now=NOW + 30 * DAY, policy=policy)
    assert still.to_notify == ()
    ended = tick(record_of(still), seen(far), now=NOW + 31 * DAY, policy=policy)
    (finding,) = ended.to_notify
    assert finding.ended is not None and finding.ended.capped


def test_a_customer_does_not_silence_an_unauthenticated_service_unless_configured() -> None:
    plan = tick(None, seen(grade=Grade.UNAUTHENTICATED))
    (finding,) = plan.to_notify
    assert finding.status is FindingStatus.NEW
    assert finding.not_honoured is not None and "without a password" in finding.not_honoured
    allowed = tick(
        None,
        seen(grade=Grade.UNAUTHENTICATED),
        policy=ExceptionPolicy(acknowledge_unauthenticated=True),
    )
    assert allowed.to_notify == () and allowed.acknowledged


def test_a_provider_exception_for_a_network_acknowledges_with_its_source() -> None:
    rule = ProviderException(
        replace(DNS, reason="our resolvers", source="provider"),
        network=ip_network("203.0.113.0/28"),
    )
    plan = tick(None, seen(allow=None), policy=ExceptionPolicy(provider=(rule,)))
    (finding,) = plan.acknowledged
    assert finding.acknowledged is not None
    assert (finding.acknowledged.source, finding.acknowledged.reason) == (
        "provider",
        "our resolvers",
    )
