"""What each console page shows, as plain data for its template (DESIGN §10).

Each builder reads the store through its read-only `Browse` queries and returns a dict; the
templates only lay it out. Causes and fix commands come from goalkeeper.notify.causes (the same
words and commands as the customer's mail, never rebuilt here). Bad query parameters raise
BadParameter naming the parameter and what it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import ip_address
from typing import Any
from urllib.parse import quote, urlencode

from goalkeeper.console.chart import trend_chart
from goalkeeper.lifecycle import FindingKey, FindingRecord
from goalkeeper.notify.causes import cause_text
from goalkeeper.state import NO_GRADE, STATUSES, Browse, FindingQuery, OutboxMessage
from goalkeeper.state.browse import SORTS

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
NO_VALUE = "—"  # a column whose field is empty, or not stored yet (a grade before grading)
TREND_DAYS = (30, 90)
# DESIGN §7's grades, offered by the grade filter. Seam: findings carry them once service
# verification grades them; until then every finding is NO_GRADE and shows NO_VALUE.
GRADES = ("unauthenticated", "reachable", "unconfirmed")


class BadParameter(ValueError):
    """A query parameter the console cannot use; the message names it and what it takes."""


@dataclass(frozen=True, slots=True)
class Paging:
    page: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


def finding_id(record: FindingRecord) -> str:
    """The finding's path segment: address_port_protocol (an IPv6 address has no `_`)."""
    return f"{record.address}_{record.port}_{record.protocol}"


def parse_finding_id(text: str) -> FindingKey:
    parts = text.rsplit("_", 2)
    try:
        address, port, protocol = parts
        return (str(ip_address(address)), int(port), protocol)
    except ValueError:
        raise BadParameter(
            f"finding {text!r}: expected address_port_protocol, as 192.0.2.1_6379_tcp"
        ) from None


def parse_finding_query(params: Mapping[str, str]) -> FindingQuery:
    status = params.get("status", "current") or "current"
    if status not in STATUSES:
        raise BadParameter(f"status {status!r}: one of {', '.join(STATUSES)}")
    sort = params.get("sort", "last_seen") or "last_seen"
    if sort not in SORTS:
        raise BadParameter(f"sort {sort!r}: one of {', '.join(SORTS)}")
    order = params.get("order", "desc") or "desc"
    if order not in ("asc", "desc"):
        raise BadParameter(f"order {order!r}: asc or desc")
    return FindingQuery(
        owner=params.get("owner", "").strip(),
        service=params.get("service", "").strip(),
        grade=params.get("grade", "").strip(),
        status=status,  # checked against STATUSES above
        address=params.get("address", "").strip(),
        sort=sort,
        descending=order == "desc",
    )


def parse_paging(params: Mapping[str, str]) -> tuple[int, int]:
    values = []
    for name, default, top in (("page", 1, None), ("size", PAGE_SIZE, MAX_PAGE_SIZE)):
        raw = params.get(name, "") or str(default)
        try:
            value = int(raw)
        except ValueError:
            raise BadParameter(f"{name} {raw!r}: a whole number") from None
        if value < 1 or (top is not None and value > top):
            limit = f"1 to {top}" if top else "1 or more"
            raise BadParameter(f"{name} {value}: {limit}")
        values.append(value)
    return values[0], values[1]


def finding_row(record: FindingRecord) -> dict[str, Any]:
    """One line of the findings table (and of its CSV export)."""
    ack = record.acknowledgement()
    return {
        "id": finding_id(record),
        "address": str(record.address),
        "port": record.port,
        "protocol": str(record.protocol),
        "service": record.service,
        # Grade seam: the column exists; until findings are graded every value shows NO_VALUE.
        "grade": record.grade or NO_VALUE,
        "status": str(record.status),
        "server_name": record.server_name,
        "server_id": record.server_id,
        "project_name": record.project_name,
        "project_id": record.project_id,
        "owner_name": record.owner_name or "",
        "owner_email": record.owner_email or "",
        "first_seen": _when(record.first_seen),
        "last_seen": _when(record.last_seen),
        "resolved_at": _when(record.resolved_at),
        "exception": f"{ack.source} until {ack.until}" if ack else "",
        "times_notified": record.times_notified,
    }


async def findings_page(browse: Browse, params: Mapping[str, str]) -> dict[str, Any]:
    query = parse_finding_query(params)
    page, size = parse_paging(params)
    total, records = await browse.findings_page(query, offset=(page - 1) * size, limit=size)
    paging = Paging(page=page, size=size, total=total)
    kept = {k: v for k, v in params.items() if k not in ("page", "format") and v}
    return {
        "query": query,
        "rows": [finding_row(r) for r in records],
        "paging": paging,
        "statuses": STATUSES,
        "sorts": tuple(SORTS),
        "no_grade": NO_GRADE,
        "grades": (
            *GRADES,
            *((query.grade,) if query.grade not in (*GRADES, NO_GRADE, "") else ()),
        ),
        "page_link": lambda n: "?" + urlencode({**kept, "page": n}),
        "export_link": lambda fmt: "?" + urlencode({**kept, "format": fmt}),
        "sort_link": lambda column: (
            "?" + urlencode({**kept, "sort": column, "order": _flip(query, column), "page": 1})
        ),
    }


def _flip(query: FindingQuery, column: str) -> str:
    if query.sort == column:
        return "asc" if query.descending else "desc"
    return "desc"


async def finding_page(browse: Browse, key: FindingKey) -> dict[str, Any] | None:
    record = await browse.finding(key)
    if record is None:
        return None
    messages = await browse.messages_about(key)
    changes = await browse.changes(key)
    finding = record.to_finding()
    cause = cause_text(finding)
    ack = record.acknowledgement()
    return {
        "row": finding_row(record),
        "record": record,
        "history": history(record),
        "changes": [
            {
                "at": _when(c.at),
                "change": f"{c.previous} → {c.status}" if c.previous else f"first seen {c.status}",
                "detail": c.detail,
                "run_id": c.run_id,
            }
            for c in changes
        ],
        "messages": [message_row(m) for m in messages],
        "cause": cause,
        "evidence": record.evidence,
        "exception": ack,
        "unmonitored": record.unmonitored_reason,
    }


def history(record: FindingRecord) -> list[tuple[str, str]]:
    """The status changes the store keeps the time of, oldest first.

    The findings table keeps the latest time of each change (first seen, reopened, no longer
    monitored, acknowledged, resolved), not a log of every repeat: a finding reopened twice
    shows its latest reopening."""
    events = [
        (record.first_seen, "first seen open"),
        (record.reopened_at, "reopened"),
        (record.acknowledged_since, "acknowledged by an exception"),
        (record.unmonitored_since, f"no longer monitored: {record.unmonitored_reason or ''}"),
        (record.last_notified_at, f"last mailed ({_times(record.times_notified)})"),
        (record.last_seen, "last seen open"),
        (record.resolved_at, "resolved (seen closed)"),
    ]
    present = [(at, what) for at, what in events if at is not None]
    return [(_when(at), what) for at, what in sorted(present, key=lambda e: e[0])]


def message_row(message: OutboxMessage, *, resend_seconds: float | None = None) -> dict[str, Any]:
    subject = message.payload.get("subject", "") if message.loaded else ""
    next_attempt = ""
    if message.status == "pending" and resend_seconds is not None:
        since = message.last_attempt_at or message.created_at
        next_attempt = f"by {_when(since + timedelta(seconds=resend_seconds))}"
    elif message.status == "failed":
        next_attempt = "none: POST /outbox/retry sends it again"
    return {
        "id": message.id,
        "run_id": message.run_id,
        "channel": message.channel,
        "recipient": message.recipient,
        "recipient_key": message.recipient_key,
        "subject": subject,
        "status": message.status,
        "attempts": message.attempts,
        "created_at": _when(message.created_at),
        "sent_at": _when(message.sent_at),
        "last_attempt_at": _when(message.last_attempt_at),
        "last_error": message.last_error or "",
        "next_attempt": next_attempt,
    }


async def overview_page(browse: Browse, *, now: datetime) -> dict[str, Any]:
    counts = await browse.open_counts()
    series = await browse.trend(now - timedelta(days=max(TREND_DAYS)))
    ticks = await ticks_rows(browse, limit=10)
    return {
        "by_service": sorted(counts.by_service.items(), key=lambda i: (-i[1], i[0])),
        "by_grade": sorted(counts.by_grade.items(), key=lambda i: (-i[1], i[0])),
        "by_status": sorted(counts.by_status.items(), key=lambda i: (-i[1], i[0])),
        "open_total": sum(counts.by_service.values()),
        "charts": [trend_chart(series, now=now, days=d) for d in TREND_DAYS],
        "ticks": ticks,
        "no_grade": NO_GRADE,
    }


async def ticks_rows(browse: Browse, *, offset: int = 0, limit: int = 20) -> list[dict[str, Any]]:
    stats = await browse.ticks(offset=offset, limit=limit)
    now_sent = await browse.messages_of_runs([s.run_id for s in stats])
    return [
        {
            "run_id": s.run_id,
            "finished_at": _when(s.finished_at),
            "duration": f"{s.duration_seconds:.1f} s",
            "outcome": s.outcome,
            "targets": s.targets,
            "hosts_scanned": s.hosts_scanned,
            "open_findings": s.open_findings,
            "not_scanned": s.not_scanned,
            "not_scanned_why": sorted(s.not_scanned_why.items()),
            "not_scanned_more": s.not_scanned - len(s.not_scanned_why),
            "mails_sent": s.mails_sent,
            "mails_failed": s.mails_failed,
            "mails_queued": s.mails_queued,
            "messages_now": dict(sorted(now_sent.get(s.run_id, {}).items())),
        }
        for s in stats
    ]


async def ticks_page(browse: Browse, params: Mapping[str, str]) -> dict[str, Any]:
    page, size = parse_paging({"page": params.get("page", ""), "size": "20"})
    rows = await ticks_rows(browse, offset=(page - 1) * size, limit=size)
    return {
        "ticks": rows,
        "page_number": page,
        "more": len(rows) == size,
        "started": params.get("started", ""),
        "busy": params.get("busy", ""),
    }


async def owners_page(browse: Browse, params: Mapping[str, str]) -> dict[str, Any]:
    page, size = parse_paging({"page": params.get("page", ""), "size": "100"})
    total, owners = await browse.owners(offset=(page - 1) * size, limit=size)
    rows = []
    for owner in owners:
        mail = owner.last_mail
        rows.append(
            {
                "email": owner.email or "",
                "name": owner.name or "",
                "projects": owner.projects,
                "open_findings": owner.open_findings,
                "findings_link": "findings?" + urlencode({"owner": owner.email or ""}),
                "last_mail": _when(mail.created_at) if mail else "",
                "last_mail_state": mail.status if mail else "never mailed",
                "last_error": (mail.last_error or "") if mail else "",
            }
        )
    return {"owners": rows, "paging": Paging(page=page, size=size, total=total)}


async def outbox_page(browse: Browse, *, resend_seconds: float) -> dict[str, Any]:
    waiting = await browse.waiting()
    rows = [message_row(m, resend_seconds=resend_seconds) for m in waiting]
    return {
        "pending": [r for r in rows if r["status"] == "pending"],
        "failed": [r for r in rows if r["status"] == "failed"],
    }


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at is not None else ""


def path_of(record_id: str) -> str:
    return "findings/" + quote(record_id, safe="")


def _times(count: int) -> str:
    return f"mailed {count} time{'' if count == 1 else 's'}"
