"""Each console page's data, read from a real store (SQLite and PostgreSQL), and the tick's
counts as a real tick writes them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from goalkeeper.console.chart import nice_ceiling, trend_chart
from goalkeeper.console.pages import (
    GRADES,
    BadParameter,
    finding_page,
    findings_page,
    outbox_page,
    overview_page,
    owners_page,
    parse_finding_id,
    ticks_page,
)
from goalkeeper.metrics import Metrics
from goalkeeper.model import IPAddress, PortSpec, ScanResult
from goalkeeper.pipeline import run_tick
from goalkeeper.rootcause import Cause, close_commands
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.state import StateStore, status_changes
from tests.console_world import T0, WORLD_RULE_CAUSE, record, tick
from tests.test_pipeline import NOW, A, B, Kept, Listing, Recording, settings, target

pytest_plugins = ["tests.db"]  # the state_url fixture: SQLite and PostgreSQL

ALICE, BOB = "alice@customer.example", "bob@other.example"


@pytest.fixture
async def filled(state_url: str) -> Any:
    store = await StateStore.open(state_url)
    old = [record("203.0.113.1", seen=T0 - timedelta(days=60))]
    await tick(store, "run-old", T0 - timedelta(days=60), old)
    await tick(
        store,
        "run-1",
        T0,
        [
            record("203.0.113.5", cause=WORLD_RULE_CAUSE, grade="unauthenticated"),
            record("203.0.113.6", 9200, service="elasticsearch", owner_email=BOB,
                   owner_name="Bob", project="p-2"),
            record("203.0.113.7", exception=True),
            record("203.0.113.8", resolved=True),
            record("198.51.100.4", owner_email=None, owner_name=None, project="p-3"),
        ],
        mail_to=ALICE,
        not_scanned={"203.0.113.9": "the host did not answer"},
    )  # fmt: skip
    try:
        yield store
    finally:
        await store.aclose()


async def addresses(store: StateStore, **params: str) -> list[str]:
    data = await findings_page(store.browse, params)
    return [row["address"] for row in data["rows"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sort": "address", "order": "asc"},
         ["198.51.100.4", "203.0.113.1", "203.0.113.5", "203.0.113.6", "203.0.113.7"]),
        ({"owner": "BOB", "sort": "address"}, ["203.0.113.6"]),
        ({"owner": "p-3", "sort": "address"}, ["198.51.100.4"]),
        ({"service": "elasticsearch"}, ["203.0.113.6"]),
        ({"grade": "unauthenticated"}, ["203.0.113.5"]),
        ({"status": "acknowledged"}, ["203.0.113.7"]),
        ({"status": "resolved"}, ["203.0.113.8"]),
        ({"status": "open", "address": "203.0.113.", "sort": "address", "order": "asc"},
         ["203.0.113.1", "203.0.113.5", "203.0.113.6"]),
        ({"address": "198.51"}, ["198.51.100.4"]),
        ({"address": "203.0.113._"}, []),  # LIKE's wildcards are taken literally
        ({"sort": "last_seen", "order": "asc", "size": "2"}, ["203.0.113.1", "198.51.100.4"]),
        ({"sort": "address", "order": "asc", "size": "2", "page": "3"}, ["203.0.113.7"]),
    ],
)  # fmt: skip
async def test_findings_filter_sort_and_page(
    filled: StateStore, params: dict[str, str], expected: list[str]
) -> None:
    assert await addresses(filled, **params) == expected


async def test_findings_page_counts_all_matches_and_shows_the_grade_seam(
    filled: StateStore,
) -> None:
    data = await findings_page(filled.browse, {"size": "2"})
    assert (data["paging"].total, data["paging"].pages) == (5, 3)
    grades = {
        row["address"]: row["grade"] for row in (await findings_page(filled.browse, {}))["rows"]
    }
    assert grades["203.0.113.5"] == "unauthenticated"
    assert grades["203.0.113.6"] == "—"
    assert (await addresses(filled, grade="none", sort="address", order="asc"))[:1] == [
        "198.51.100.4"
    ]


async def test_the_grade_filter_offers_design_grades_and_keeps_one_it_does_not_know(
    filled: StateStore,
) -> None:
    assert (await findings_page(filled.browse, {}))["grades"] == GRADES
    chosen = await findings_page(filled.browse, {"grade": "verified-later"})
    assert chosen["grades"] == (*GRADES, "verified-later") and chosen["rows"] == []


async def test_one_finding_has_its_history_cause_commands_exception_and_messages(
    filled: StateStore,
) -> None:
    [mail] = await filled.pending()
    await filled.mark_sent(mail.id, now=T0 + timedelta(minutes=1))
    data = await finding_page(filled.browse, parse_finding_id("203.0.113.5_6379_tcp"))
    assert data is not None
    assert [m["status"] for m in data["messages"]] == ["sent"]
    assert data["messages"][0]["subject"] == "[run-1] Open ports on your servers"
    events = [what for _, what in data["history"]]
    assert events[0] == "first seen open"
    assert "last mailed (mailed 1 time)" in events
    expected = close_commands(Cause.from_json(WORLD_RULE_CAUSE), 6379, data["record"].protocol, 4)
    assert list(data["cause"].commands) == expected and expected
    assert data["evidence"] == "redis_version:7.2.4"
    assert data["exception"] is None
    excepted = await finding_page(filled.browse, ("203.0.113.7", 6379, "tcp"))
    assert excepted is not None and excepted["exception"].source == "customer"
    assert await finding_page(filled.browse, ("203.0.113.77", 6379, "tcp")) is None
    # A key that is a prefix of another's JSON is not a match: 203.0.113.5 vs 203.0.113.50.
    assert not (await filled.browse.messages_about(("203.0.113.50", 6379, "tcp")))


def test_finding_ids_are_checked() -> None:
    assert parse_finding_id("2001:db8::1_6379_tcp") == ("2001:db8::1", 6379, "tcp")
    with pytest.raises(BadParameter, match="address_port_protocol"):
        parse_finding_id("nothing")


async def test_overview_counts_open_findings_and_charts_30_and_90_days(
    filled: StateStore,
) -> None:
    data = await overview_page(filled.browse, now=T0 + timedelta(hours=1))
    assert dict(data["by_service"]) == {"redis": 4, "elasticsearch": 1}
    assert dict(data["by_grade"]) == {"none": 4, "unauthenticated": 1}
    assert dict(data["by_status"]) == {"open": 4, "acknowledged": 1}
    thirty, ninety = data["charts"]
    assert (thirty.days, len(thirty.dots), thirty.latest) == (30, 1, 4)
    assert (ninety.days, len(ninety.dots)) == (90, 2)
    assert [t["run_id"] for t in data["ticks"]] == ["run-1", "run-old"]
    assert data["ticks"][0]["messages_now"] == {"pending": 1}


async def test_owners_have_their_open_findings_and_last_mail_state(filled: StateStore) -> None:
    [mail] = await filled.pending()
    await filled.mark_failed(mail.id, reason="550 mailbox unavailable", now=T0)
    data = await owners_page(filled.browse, {})
    rows = {row["email"]: row for row in data["owners"]}
    assert rows[ALICE]["open_findings"] == 3
    assert (rows[ALICE]["last_mail_state"], rows[ALICE]["last_error"]) == (
        "failed", "550 mailbox unavailable"
    )  # fmt: skip
    assert rows[BOB]["last_mail_state"] == "never mailed"
    assert rows[""]["open_findings"] == 1  # no owner known: NOT FOUND


async def test_outbox_lists_pending_and_failed_with_error_and_next_attempt(
    filled: StateStore,
) -> None:
    await tick(filled, "run-2", T0 + timedelta(days=1), [record("203.0.113.6")], mail_to=BOB)
    pending = await filled.pending()
    await filled.record_attempt(pending[0].id, error="421 try later", now=T0)
    await filled.mark_failed(pending[1].id, reason="550 no such user", now=T0)
    data = await outbox_page(filled.browse, resend_seconds=300)
    [waiting] = data["pending"]
    assert (waiting["last_error"], waiting["next_attempt"]) == (
        "421 try later", "by 2026-12-01 06:05:00 UTC"
    )  # fmt: skip
    [failed] = data["failed"]
    assert failed["last_error"] == "550 no such user"
    assert failed["next_attempt"].startswith("none")


async def test_ticks_say_what_was_not_scanned_and_why(filled: StateStore) -> None:
    data = await ticks_page(filled.browse, {})
    newest = data["ticks"][0]
    assert newest["not_scanned_why"] == [("203.0.113.9", "the host did not answer")]
    assert (newest["targets"], newest["duration"]) == (6, "42.0 s")


async def test_a_real_tick_stores_its_counts_for_the_console(tmp_path: Any) -> None:
    async with StateStore.opened(f"sqlite+aiosqlite:///{tmp_path}/state.db") as store:
        targets = [target(a) for a in (A, B)]
        await run_tick(
            now=NOW, run_id="r-stats", settings=settings(), inventory=Listing(targets),
            scanner=Recording(), store=store, dispatch=Kept(), catalog=load_catalog(),
            metrics=Metrics(),
        )  # fmt: skip
        [stats] = await store.browse.ticks()
    assert (stats.run_id, stats.targets, stats.hosts_scanned) == ("r-stats", 2, 2)
    assert (dict(stats.by_service), dict(stats.by_grade)) == ({"redis": 2}, {"none": 2})
    assert stats.outcome == "success" and stats.duration_seconds >= 0
    assert stats.mails_queued == 1  # one owner's mail, handed to the worker (Kept)


class Closed(Recording):
    """Scans every address and finds nothing open: the findings there are resolved."""

    async def scan(self, addresses: Sequence[IPAddress], ports: Sequence[PortSpec]) -> ScanResult:
        return ScanResult(scanned=frozenset(addresses), open_ports=(), nmap_runs=1)


async def test_real_ticks_log_every_status_change_and_the_finding_page_shows_them(
    tmp_path: Any,
) -> None:
    async with StateStore.opened(f"sqlite+aiosqlite:///{tmp_path}/state.db") as store:
        for n, scanner in enumerate((Recording(), Recording(), Closed(), Recording())):
            await run_tick(
                now=NOW + timedelta(days=n), run_id=f"r{n}", settings=settings(),
                inventory=Listing([target(A)]), scanner=scanner, store=store, dispatch=Kept(),
                catalog=load_catalog(), metrics=Metrics(),
            )  # fmt: skip
        data = await finding_page(store.browse, (str(A), 6379, "tcp"))
    assert data is not None
    assert [(c["change"], c["run_id"]) for c in data["changes"]] == [
        ("first seen open", "r0"), ("open → resolved", "r2"), ("resolved → open", "r3")
    ]  # fmt: skip


def test_status_changes_are_the_records_whose_status_moved() -> None:
    new = record("203.0.113.1")
    still = record("203.0.113.2")
    resolved = record("203.0.113.3")
    ignored = record("203.0.113.4")
    previous = {r.key: r for r in (still, record("203.0.113.3"), record("203.0.113.4"))}
    written = [
        new,
        still,
        dataclasses.replace(resolved, resolved_at=T0),
        dataclasses.replace(ignored, unmonitored_reason="host not scanned", unmonitored_since=T0),
        dataclasses.replace(record("203.0.113.2", port=27017), exception_source="provider",
                            exception_reason="honeypot", exception_until=T0.date(),
                            acknowledged_since=T0),
    ]  # fmt: skip
    changes = status_changes(previous, written, run_id="r9", at=T0)
    assert [(c.key[0], c.key[1], c.previous, c.status, c.detail) for c in changes] == [
        ("203.0.113.1", 6379, None, "open", ""),
        ("203.0.113.3", 6379, "open", "resolved", ""),
        ("203.0.113.4", 6379, "open", "unmonitored", "host not scanned"),
        ("203.0.113.2", 27017, None, "acknowledged", "provider: honeypot"),
    ]
    assert {c.run_id for c in changes} == {"r9"}


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (99, 100), (101, 200)]
)
def test_axis_tops_are_round(value: int, ceiling: int) -> None:
    assert nice_ceiling(value) == ceiling


def test_the_chart_leaves_out_older_points_and_scales_to_its_box() -> None:
    series = [(T0 - timedelta(days=40), 9), (T0 - timedelta(days=10), 4), (T0, 2)]
    chart = trend_chart(series, now=T0, days=30)
    assert [label for *_, label in chart.dots] == [
        "2026-11-21 06:00 UTC: 4 open", "2026-12-01 06:00 UTC: 2 open"
    ]  # fmt: skip
    (x1, y1, _), (x2, y2, _) = chart.dots
    assert x1 < x2 == chart.width - 12  # now is the right edge
    assert (y1, y2, chart.baseline) == (44.0, 108.0, 172.0)  # the axis tops at a round 5
    assert [t.label for t in chart.y_ticks] == ["0", "1", "2", "3", "4", "5"]
    assert [t.anchor for t in chart.x_ticks][::5] == ["start", "end"]


@pytest.mark.parametrize(
    ("top", "labels"),
    [(1, ["0", "1"]), (2, ["0", "1", "2"]), (20, ["0", "5", "10", "15", "20"]),
     (100, ["0", "20", "40", "60", "80", "100"])],
)  # fmt: skip
def test_gridlines_land_on_whole_numbers(top: int, labels: list[str]) -> None:
    chart = trend_chart([(T0, top)], now=T0, days=30)
    assert [t.label for t in chart.y_ticks] == labels
    assert trend_chart([], now=T0, days=30).empty
