"""A state store filled the way ticks fill it, for the staff console's tests and benchmark.

Everything goes in through the store's own writers (commit_tick, finish_run, mark_sent,
mark_failed), so the console reads rows exactly as the daemon leaves them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from ipaddress import ip_address

from goalkeeper.lifecycle import FindingRecord
from goalkeeper.model import OutgoingMail, Transport
from goalkeeper.rootcause import Cause, MatchedRule
from goalkeeper.state import NewMessage, StateStore, TickStats

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
HOSTILE_NAME = "<script>alert(1)</script>"
# A world-open rule, stored as the tick stores it (goalkeeper.rootcause.Cause.to_json).
WORLD_RULE_CAUSE = Cause(
    kind="world_rule",
    rules=(
        MatchedRule(
            security_group_id="8f1d1a66-0c0c-4c61-9d0e-6a8b8e0b1d11",
            security_group_name="default",
            rule_id="5b7c6f0a-3e0e-4f3a-8a55-1f4bdb9c2a10",
            protocol="tcp",
            port_range_min=6379,
            port_range_max=6379,
            remote_ip_prefix="0.0.0.0/0",
        ),
    ),
).to_json()


def record(
    address: str,
    port: int = 6379,
    *,
    service: str = "redis",
    server_name: str = "db-1",
    owner_email: str | None = "alice@customer.example",
    owner_name: str | None = "Alice Ltd",
    project: str = "p-1",
    seen: datetime = T0,
    resolved: bool = False,
    grade: str | None = None,
    cause: str | None = None,
    exception: bool = False,
) -> FindingRecord:
    return FindingRecord(
        address=ip_address(address),
        port=port,
        protocol=Transport.TCP,
        service=service,
        first_seen=seen - timedelta(days=3),
        last_seen=seen,
        evidence="redis_version:7.2.4",
        server_id=f"srv-{address}",
        server_name=server_name,
        project_id=project,
        project_name=f"{project}-name",
        owner_name=owner_name,
        owner_email=owner_email,
        resolved_at=seen if resolved else None,
        grade=grade,
        cause=cause,
        exception_source="customer" if exception else None,
        exception_reason="a honeypot <b>on purpose</b>" if exception else None,
        exception_until=date(2027, 1, 1) if exception else None,
        exception_requested_until=date(2027, 1, 1) if exception else None,
        acknowledged_since=seen - timedelta(days=1) if exception else None,
    )


def mail_about(run_id: str, records: list[FindingRecord], to: str) -> NewMessage:
    mail = OutgoingMail(
        recipient=to,
        sender="Goalkeeper <security@provider.example>",
        subject=f"[{run_id}] Open ports on your servers",
        text="Close them.",
        html="<p>Close them.</p>",
        message_id=f"<{run_id}.{to}@goalkeeper>",
    )
    return NewMessage.email(mail, recipient_key=to, finding_keys=[r.key for r in records])


async def tick(
    store: StateStore,
    run_id: str,
    at: datetime,
    records: list[FindingRecord],
    *,
    mail_to: str | None = None,
    not_scanned: dict[str, str] | None = None,
) -> None:
    """One tick: its findings and (when `mail_to`) one mail about them, then its record."""
    messages = [mail_about(run_id, records, mail_to)] if mail_to else []
    await store.commit_tick(run_id=run_id, started_at=at, upserts=records, messages=messages)
    open_now = [r for r in records if r.is_open]
    stats = TickStats(
        run_id=run_id,
        finished_at=at + timedelta(seconds=42),
        duration_seconds=42.0,
        outcome="success",
        targets=len(records) + len(not_scanned or {}),
        hosts_scanned=len(records),
        by_service={"redis": len(open_now)} if open_now else {},
        by_grade={"none": len(open_now)} if open_now else {},
        not_scanned=len(not_scanned or {}),
        not_scanned_why=not_scanned or {},
        mails_queued=len(messages),
    )
    await store.finish_run(run_id, finished_at=stats.finished_at, summary={}, stats=stats)
