"""The state store on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import ast
import asyncio
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Executable, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from goalkeeper.lifecycle import Coverage, FindingRecord, plan_lifecycle
from goalkeeper.model import Finding, IPAddress, OutgoingMail, Owner, Target, Transport
from goalkeeper.state import NewMessage, StateError, StateStore, StateUnavailable
from goalkeeper.state import store as store_module
from goalkeeper.state.migrate import HEAD_REVISION, MIGRATIONS, alembic_config, create_engine
from goalkeeper.state.schema import metadata, runs

pytest_plugins = ["tests.db"]  # the state_url and postgres_server fixtures

R = TypeVar("R")
ROOT = Path(__file__).resolve().parent.parent

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ACME = Owner(name="ACME Ltd", email="admin@acme.example", client_id="7")


def finding(address: str, port: int = 6379, owner: Owner = ACME) -> Finding:
    target = Target(
        address=ip_address(address),
        server_name=f"srv-{address}",
        server_id="5f0c",
        project_id="p1",
        project_name="acme-prod",
        owner=owner,
    )
    return Finding(
        address=target.address,
        port=port,
        protocol=Transport.TCP,
        service="redis",
        target=target,
        first_seen=T0,
        last_seen=T0,
        evidence="open (syn-ack)",
    )


def covering(addresses: set[IPAddress]) -> Coverage:
    """A tick that scanned `addresses` for 6379/tcp, the port every finding here is on."""
    return Coverage(scanned=frozenset(addresses), ports=frozenset({(6379, Transport.TCP)}))


def record(address: str, port: int = 6379, *, at: datetime = T0) -> FindingRecord:
    return FindingRecord(
        address=ip_address(address),
        port=port,
        protocol=Transport.TCP,
        service="redis",
        first_seen=at,
        last_seen=at,
        owner_email=ACME.email,
    )


def rendered(recipient_key: str, run: str = "run-1") -> OutgoingMail:
    return OutgoingMail(
        recipient="security@example.com",
        sender="Goalkeeper <security@example.com>",
        subject=f"Exposed services ({recipient_key})",
        text="Redis is open to the world.",
        html="<p>Redis is open to the world.</p>",
        message_id=f"<{run}.{recipient_key}@goalkeeper>",
        headers={"X-Goalkeeper-Run": run},
    )


def mail(recipient_key: str, records: list[FindingRecord], run: str = "run-1") -> NewMessage:
    return NewMessage.email(
        rendered(recipient_key, run),
        recipient_key=recipient_key,
        finding_keys=[r.key for r in records],
    )


async def query(url: str, statement: Executable) -> list[Any]:
    """Read the database behind the store's back."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(statement)).all())
    finally:
        await engine.dispose()


def schema_differences(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


@pytest.fixture
def alembic_upgrades(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The targets `alembic.command.upgrade` is called with from now on; it still runs."""
    called: list[str] = []
    original = command.upgrade

    def upgrade(config: Config, revision: str, **options: Any) -> None:
        called.append(revision)
        original(config, revision, **options)

    monkeypatch.setattr(command, "upgrade", upgrade)
    return called


async def on_database(url: str, work: Callable[[Connection], R]) -> R:
    """Run `work` in one transaction, on an engine set up as the store's (WAL, BEGIN IMMEDIATE)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def upgrade_with_alembic(connection: Connection) -> None:
    """Alembic's own upgrade to head: how every open built the schema before."""
    command.upgrade(alembic_config(connection), "head")


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def table_names(connection: Connection) -> list[str]:
    return sorted(inspect(connection).get_table_names())


def reflected_schema(connection: Connection) -> dict[str, Any]:
    """Everything the database reports about its tables, in an order that compares."""
    inspector = inspect(connection)
    tables: dict[str, Any] = {}
    for name in sorted(inspector.get_table_names()):
        primary_key = inspector.get_pk_constraint(name)
        tables[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c["default"])
                for c in inspector.get_columns(name)
            ],
            "primary key": (primary_key["name"], primary_key["constrained_columns"]),
            "indexes": sorted(
                (i["name"] or "", i["column_names"], i["unique"])
                for i in inspector.get_indexes(name)
            ),
            "unique": sorted(
                (u["name"] or "", u["column_names"]) for u in inspector.get_unique_constraints(name)
            ),
            "foreign keys": sorted(
                (
                    f["name"] or "",
                    f["constrained_columns"],
                    f["referred_table"],
                    f["referred_columns"],
                    sorted(f["options"].items()),
                )
                for f in inspector.get_foreign_keys(name)
            ),
        }
    versions = connection.execute(text("SELECT version_num FROM alembic_version"))
    return {"tables": tables, "versions": sorted(versions.scalars())}


async def test_migrations_create_the_schema_then_keep_data(state_url: str) -> None:
    first = await StateStore.open(state_url)
    await first.commit_tick(
        run_id="run-1", started_at=T0, upserts=[record("203.0.113.5")], messages=[]
    )
    await first.aclose()

    again = await StateStore.open(state_url)  # migrations run again: a no-op
    try:
        assert [r.key for r in await again.list_findings()] == [("203.0.113.5", 6379, "tcp")]
    finally:
        await again.aclose()
    assert await query(state_url, text("SELECT version_num FROM alembic_version")) == [
        (HEAD_REVISION,)
    ]
    engine = create_async_engine(state_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(schema_differences) == []
    finally:
        await engine.dispose()


async def test_two_processes_opening_a_fresh_database_both_succeed(
    state_url: str,
) -> None:
    stores = await asyncio.gather(StateStore.open(state_url), StateStore.open(state_url))
    for opened in stores:
        await opened.ping()
        await opened.aclose()


def test_head_revision_is_the_newest_migration() -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == HEAD_REVISION, "a new migration: set HEAD_REVISION in state/migrate.py"


async def test_a_fresh_database_is_built_as_the_migrations_build_it(
    state_url: str, other_state_url: str, alembic_upgrades: list[str]
) -> None:
    opened = await StateStore.open(state_url)
    await opened.aclose()
    assert alembic_upgrades == []  # built from schema.py and stamped, without Alembic
    await on_database(other_state_url, upgrade_with_alembic)
    assert alembic_upgrades == ["head"]

    fresh = await on_database(state_url, reflected_schema)
    migrated = await on_database(other_state_url, reflected_schema)
    assert sorted(fresh["tables"]) == [
        "alembic_version",
        "finding_events",
        "findings",
        "heartbeats",
        "latent_exposures",
        "latent_notices",
        "outbox",
        "runs",
        "tick_stats",
    ]
    assert fresh["versions"] == [HEAD_REVISION]
    assert fresh == migrated
    assert await on_database(state_url, schema_differences) == []


async def test_alembic_finds_a_fresh_database_at_head(
    state_url: str, alembic_upgrades: list[str]
) -> None:
    for _ in range(2):  # built, then found at head
        opened = await StateStore.open(state_url)
        await opened.aclose()
    assert alembic_upgrades == []
    assert await on_database(state_url, current_revision) == HEAD_REVISION

    before = await on_database(state_url, reflected_schema)
    await on_database(state_url, upgrade_with_alembic)  # a no-op: a migration would fail, re-run
    assert alembic_upgrades == ["head"]
    assert await on_database(state_url, reflected_schema) == before


async def test_a_database_from_0001_keeps_its_findings_as_monitored(state_url: str) -> None:
    def at_0001_with_a_finding(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(
            text(
                "INSERT INTO findings (address, port, protocol, service, state, evidence,"
                " server_id, server_name, project_id, project_name, first_seen, last_seen,"
                " times_notified) VALUES ('203.0.113.5', 6379, 'tcp', 'redis', 'open', '',"
                " 's', 'web-1', 'p1', 'acme', '2026-11-01 06:00:00', '2026-11-01 06:00:00', 1)"
            )
        )

    await on_database(state_url, at_0001_with_a_finding)
    opened = await StateStore.open(state_url)
    try:
        (kept,) = await opened.list_findings()
    finally:
        await opened.aclose()
    assert (kept.key, kept.status, kept.times_notified) == (("203.0.113.5", 6379, "tcp"), "open", 1)
    assert (kept.unmonitored_since, kept.unmonitored_reason) == (None, None)
    assert await on_database(state_url, current_revision) == HEAD_REVISION
    assert await on_database(state_url, schema_differences) == []


def _nothing(connection: Connection) -> None:
    """An empty database: SQLite creates the file, with no table in it."""


def _version_table_without_a_row(connection: Connection) -> None:
    connection.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL,"
            " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )


# Opens the store in a new interpreter, then prints which alembic modules it imported.
_OPEN_AND_LIST_ALEMBIC = """
import asyncio, sys
from goalkeeper.state import StateStore

async def main() -> None:
    store = await StateStore.open(sys.argv[1])
    await store.ping()
    await store.aclose()

asyncio.run(main())
print(sorted(name for name in sys.modules if name.partition(".")[0] == "alembic"))
"""


@pytest.mark.parametrize(
    ("prepare", "imports_alembic"),
    [
        pytest.param(upgrade_with_alembic, False, id="at-head"),
        pytest.param(_nothing, False, id="empty"),
        pytest.param(_version_table_without_a_row, True, id="needs-migrating"),
    ],
)
async def test_alembic_is_imported_only_to_migrate(
    tmp_path: Path, prepare: Callable[[Connection], None], imports_alembic: bool
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/goalkeeper.db"
    await on_database(url, prepare)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OPEN_AND_LIST_ALEMBIC,
        url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    imported = ast.literal_eval(out.decode().strip().splitlines()[-1])
    assert ("alembic" in imported) is imports_alembic, imported
    assert await on_database(url, current_revision) == HEAD_REVISION
    assert await on_database(url, schema_differences) == []


async def test_a_version_table_without_a_row_is_migrated_by_alembic(
    state_url: str, alembic_upgrades: list[str]
) -> None:
    await on_database(state_url, _version_table_without_a_row)
    opened = await StateStore.open(state_url)
    await opened.aclose()
    assert alembic_upgrades == ["head"]
    assert await on_database(state_url, current_revision) == HEAD_REVISION
    assert await on_database(state_url, schema_differences) == []


async def test_tables_without_a_version_are_left_to_alembic(
    state_url: str, alembic_upgrades: list[str]
) -> None:
    await on_database(state_url, metadata.create_all)  # never stamped: no revision to trust
    with pytest.raises(StateUnavailable, match="already exists"):
        await StateStore.open(state_url)
    assert alembic_upgrades == ["head"]
    # The failed migration left nothing behind, not even a version table.
    assert await on_database(state_url, table_names) == [
        "finding_events", "findings", "heartbeats", "latent_exposures", "latent_notices", "outbox",
        "runs", "tick_stats",
    ]  # fmt: skip


async def test_an_unknown_revision_is_refused_by_alembic(
    state_url: str, alembic_upgrades: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def stamp_unknown(connection: Connection) -> None:
        _version_table_without_a_row(connection)
        connection.execute(text("INSERT INTO alembic_version VALUES ('9999')"))

    engines: list[AsyncEngine] = []
    first_pools: list[object] = []

    def kept(url: str) -> AsyncEngine:
        engines.append(create_engine(url))
        first_pools.append(engines[-1].pool)
        return engines[-1]

    await on_database(state_url, stamp_unknown)
    monkeypatch.setattr(store_module, "create_engine", kept)
    with pytest.raises(
        StateUnavailable, match=rf"identified by '9999'.*knows up to {HEAD_REVISION}"
    ):
        await StateStore.open(state_url)
    (engine,) = engines
    assert engine.pool is not first_pools[0]  # disposed by open (which makes a new, empty pool)
    assert alembic_upgrades == ["head"]
    assert await on_database(state_url, table_names) == ["alembic_version"]


def test_upgrades_never_drop_anything() -> None:
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        (upgrade,) = [
            n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"
        ]
        calls = [n for n in ast.walk(upgrade) if isinstance(n, ast.Call)]
        names = [c.func.attr for c in calls if isinstance(c.func, ast.Attribute)]
        assert names, f"{path.name}: upgrade() does nothing"
        assert not [n for n in names if n.startswith("drop_")], f"{path.name} drops data"


async def test_commit_tick_writes_findings_and_messages(store: StateStore) -> None:
    records = [record("203.0.113.5"), record("203.0.113.5", 27017), record("2001:db8::7")]
    stored = await store.commit_tick(
        run_id="run-1",
        started_at=T0,
        upserts=records,
        messages=[mail("admin@acme.example", records[:2]), mail("not-found:p9", records[2:])],
    )
    assert [(m.recipient_key, m.status, m.attempts) for m in stored] == [
        ("admin@acme.example", "pending", 0),
        ("not-found:p9", "pending", 0),
    ]
    assert stored[0].finding_keys == (records[0].key, records[1].key)
    assert stored[0].created_at == T0
    # commit_tick returns references: the payload stays in the store until a sender reads it.
    assert not stored[0].loaded
    with pytest.raises(ValueError, match="reference"):
        stored[0].mail()
    full = await store.message(stored[0].id)
    assert full is not None and full.loaded
    assert full.mail() == rendered("admin@acme.example")
    loaded = await store.load_findings()
    assert loaded == {r.key: r for r in records}
    pending = await store.pending()
    assert [replace(m, payload={}, loaded=False) for m in pending] == stored


async def test_commit_tick_consumes_a_generator_in_chunks(store: StateStore) -> None:
    asked: list[int] = []

    def messages() -> Iterator[NewMessage]:
        for number in range(250):  # more than two chunks
            asked.append(number)
            yield mail(f"owner-{number}@x.example", [])

    stored = await store.commit_tick(run_id="run-1", started_at=T0, upserts=[], messages=messages())
    assert len(asked) == 250
    assert [m.recipient_key for m in stored] == [f"owner-{n}@x.example" for n in range(250)]
    last = await store.message(stored[-1].id)
    assert last is not None and last.mail() == rendered("owner-249@x.example")


async def test_committing_takes_mails_then_a_summary_all_or_nothing(store: StateStore) -> None:
    first = record("203.0.113.5")
    summary = NewMessage.telegram("tick", chat_id="42", message_id="run-1.summary")
    async with store.committing(run_id="run-1", started_at=T0, upserts=[first]) as outbox:
        await outbox.add(iter([mail("a@x.example", [first])]))
        await outbox.add([summary])
    assert [(m.channel, m.recipient_key) for m in outbox.stored] == [
        ("email", "a@x.example"),
        ("telegram", "summary"),
    ]

    class Interrupted(Exception):
        pass

    later = record("203.0.113.9", at=T0 + DAY)

    async def interrupted() -> None:
        async with store.committing(run_id="run-2", started_at=T0, upserts=[later]) as outbox:
            await outbox.add([mail("b@x.example", [later], run="run-2")])
            raise Interrupted  # say, the summary could not be rendered

    with pytest.raises(Interrupted):
        await interrupted()
    assert [m.recipient_key for m in await store.pending()] == ["a@x.example", "summary"]
    assert set(await store.load_findings()) == {first.key}


async def test_reroute_replaces_a_pending_mail_in_one_transaction(store: StateStore) -> None:
    first = record("203.0.113.5")
    (original,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[first], messages=[mail("a@x.example", [first])]
    )
    key = "b@x.example (rerouted from a@x.example)"
    (replacement,) = await store.reroute(
        original.id, [mail(key, [first])], reason="owner changed; sent to b", now=T0 + DAY
    )
    assert (replacement.run_id, replacement.recipient_key) == ("run-1", key)
    assert replacement.created_at == T0  # as created when the original was
    assert [m.id for m in await store.pending()] == [replacement.id]
    gone = await store.message(original.id)
    assert gone is not None
    assert (gone.status, gone.last_error, gone.failed_at) == (
        "failed",
        "owner changed; sent to b",
        T0 + DAY,
    )


async def test_reroute_of_a_mail_no_longer_pending_writes_nothing(store: StateStore) -> None:
    (original,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[], messages=[mail("a@x.example", [])]
    )
    await store.mark_sent(original.id, now=T0)
    assert await store.reroute(original.id, [mail("b@x.example", [])], reason="r", now=T0) == []
    assert await store.pending() == []
    sent = await store.message(original.id)
    assert sent is not None and sent.status == "sent"


async def test_a_failed_reroute_leaves_the_mail_pending(store: StateStore) -> None:
    (original,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[], messages=[mail("a@x.example", [])]
    )
    clashing = replace(mail("b@x.example", []), message_id=original.message_id)
    with pytest.raises(StateError, match="message_id"):
        await store.reroute(original.id, [clashing], reason="r", now=T0)
    assert [(m.id, m.status) for m in await store.pending()] == [(original.id, "pending")]


async def test_a_failure_mid_commit_leaves_nothing(store: StateStore, state_url: str) -> None:
    first = record("203.0.113.5")
    await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[first], messages=[mail("a@x.example", [first])]
    )
    later = record("203.0.113.9", at=T0 + DAY)
    clashing = replace(
        mail("b@x.example", [later], run="run-2"), message_id=mail("a@x.example", []).message_id
    )
    with pytest.raises(StateError, match="message_id"):
        await store.commit_tick(
            run_id="run-2",
            started_at=T0 + DAY,
            upserts=[later, replace(first, last_seen=T0 + DAY)],
            messages=[mail("c@x.example", [later], run="run-2"), clashing],
        )
    assert list(await store.load_findings()) == [first.key]
    assert (await store.load_findings())[first.key].last_seen == T0
    assert [m.run_id for m in await store.pending()] == ["run-1"]
    assert await query(state_url, select(runs.c.run_id)) == [("run-1",)]


async def test_a_retried_commit_does_not_duplicate_messages(store: StateStore) -> None:
    records = [record("203.0.113.5")]
    messages = [mail("admin@acme.example", records), mail("not-found:p9", records)]
    first = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=records, messages=messages
    )
    assert await store.mark_sent(first[0].id, now=T0 + timedelta(minutes=1))
    again = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=records, messages=messages
    )
    assert [m.id for m in again] == [m.id for m in first]
    assert [m.status for m in again] == ["sent", "pending"]
    assert [m.recipient_key for m in await store.pending()] == ["not-found:p9"]


async def test_mark_sent_counts_once_at_the_tick_time(store: StateStore) -> None:
    records = [record("203.0.113.5"), record("203.0.113.6")]
    (message,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=records, messages=[mail("a@x.example", records[:1])]
    )
    sent_at = T0 + timedelta(minutes=3)
    assert await store.mark_sent(message.message_id, now=sent_at)
    assert not await store.mark_sent(message.id, now=sent_at)  # a repeat counts once
    assert await store.pending() == []
    after = await store.message(message.id)
    assert after is not None
    assert (after.status, after.sent_at) == ("sent", sent_at)
    loaded = await store.load_findings()
    notified = loaded[records[0].key]
    assert (notified.times_notified, notified.last_notified_at) == (1, T0)
    assert loaded[records[1].key].times_notified == 0


async def test_a_sent_mail_records_the_grade_its_owner_now_knows(store: StateStore) -> None:
    graded = replace(record("203.0.113.5"), grade="reachable", evidence="Redis answered")
    (message,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[graded], messages=[mail("a@x.example", [graded])]
    )
    assert (await store.load_findings())[graded.key].notified_grade is None
    assert await store.mark_sent(message.id, now=T0)
    # A later tick stores a worse grade: what the owner was told stays until it is mailed.
    worse = replace(graded, grade="unauthenticated", evidence="Redis 7.0.15 answered `INFO`")
    await store.commit_tick(run_id="run-2", started_at=T0 + DAY, upserts=[worse], messages=[])
    loaded = (await store.load_findings())[graded.key]
    assert (loaded.notified_grade, loaded.grade, loaded.evidence) == (
        "reachable",
        "unauthenticated",
        "Redis 7.0.15 answered `INFO`",
    )


async def test_a_late_old_message_does_not_move_the_cadence_back(store: StateStore) -> None:
    rec = record("203.0.113.5")
    (old,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[rec], messages=[mail("a@x.example", [rec])]
    )
    (new,) = await store.commit_tick(
        run_id="run-2",
        started_at=T0 + DAY,
        upserts=[rec],
        messages=[mail("a@x.example", [rec], "run-2")],
    )
    await store.mark_sent(new.id, now=T0 + DAY)
    await store.mark_sent(old.id, now=T0 + 2 * DAY)
    stored = (await store.load_findings())[rec.key]
    assert (stored.times_notified, stored.last_notified_at) == (2, T0 + DAY)


async def test_a_tick_planned_before_a_send_keeps_the_count(store: StateStore) -> None:
    rec = record("203.0.113.5")
    (message,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[rec], messages=[mail("a@x.example", [rec])]
    )
    stale = await store.load_findings()  # the next tick reads before the mail goes out
    await store.mark_sent(message.id, now=T0)
    plan = plan_lifecycle(
        stale, [finding("203.0.113.5")], covering({rec.address}), now=T0 + DAY, reminder_days=1,
        notify_resolved=True,
    )  # fmt: skip
    await store.commit_tick(run_id="run-2", started_at=T0 + DAY, upserts=plan.upserts, messages=[])
    stored = (await store.load_findings())[rec.key]
    assert (stored.times_notified, stored.last_notified_at, stored.last_seen) == (1, T0, T0 + DAY)


async def test_permanent_and_temporary_failures(store: StateStore) -> None:
    rec = record("203.0.113.5")
    first, second = await store.commit_tick(
        run_id="run-1",
        started_at=T0,
        upserts=[rec],
        messages=[mail("a@x.example", [rec]), mail("b@x.example", [rec])],
    )
    assert await store.record_attempt(first.id, error="451 try again", now=T0) == 1
    assert await store.record_attempt(first.message_id, error="421 busy", now=T0) == 2
    failed_at = T0 + timedelta(hours=1)
    assert await store.mark_failed(first.id, reason="550 no such user", now=failed_at)
    assert not await store.mark_failed(first.id, reason="again", now=failed_at)
    assert await store.record_attempt(first.id, error="late", now=failed_at) is None
    assert [m.id for m in await store.pending()] == [second.id]

    (failed,) = await store.failed_since(T0)
    assert (failed.id, failed.status, failed.last_error) == (first.id, "failed", "550 no such user")
    assert (failed.attempts, failed.failed_at) == (3, failed_at)
    assert await store.failed_since(failed_at + timedelta(seconds=1)) == []
    assert (await store.load_findings())[rec.key].times_notified == 0


async def test_a_sent_message_cannot_be_marked_failed(store: StateStore) -> None:
    rec = record("203.0.113.5")
    (message,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[rec], messages=[mail("a@x.example", [rec])]
    )
    await store.mark_sent(message.id, now=T0)
    assert not await store.mark_failed(message.id, reason="550", now=T0)
    assert await store.failed_since(T0) == []


async def test_pending_by_channel_oldest_first(store: StateStore) -> None:
    rec = record("203.0.113.5")
    chat = NewMessage.telegram("<b>2 findings</b>", chat_id="-100", message_id="run-1.summary")
    await store.commit_tick(
        run_id="run-1",
        started_at=T0,
        upserts=[rec],
        messages=[mail("b@x.example", [rec]), chat, mail("a@x.example", [rec])],
    )
    assert [m.recipient_key for m in await store.pending("email")] == ["b@x.example", "a@x.example"]
    assert [m.recipient_key for m in await store.pending(limit=1)] == ["b@x.example"]
    (telegram,) = await store.pending("telegram")
    assert (telegram.recipient, telegram.text) == ("-100", "<b>2 findings</b>")
    with pytest.raises(ValueError, match="not an e-mail"):
        telegram.mail()


async def test_unmonitored_is_stored_and_listed_with_its_reason(store: StateStore) -> None:
    rec = replace(
        record("203.0.113.5"),
        unmonitored_since=T0 + DAY,
        unmonitored_reason="port no longer on the scan list",
    )
    await store.commit_tick(run_id="run-1", started_at=T0, upserts=[rec], messages=[])
    (listed,) = await store.list_findings()
    assert listed == rec
    assert listed.status == "unmonitored"


async def test_resolve_and_reopen_through_the_store(store: StateStore) -> None:
    a, b = finding("203.0.113.5"), finding("203.0.113.6")
    scanned = {a.address, b.address}

    async def tick(now: datetime, seen: list[Finding], run: str) -> Any:
        previous = await store.load_findings(scanned)
        plan = plan_lifecycle(
            previous, seen, covering(scanned), now=now, reminder_days=1, notify_resolved=True
        )
        await store.commit_tick(run_id=run, started_at=now, upserts=plan.upserts, messages=[])
        return plan

    await tick(T0, [a, b], "run-1")
    gone = await tick(T0 + DAY, [a], "run-2")
    assert [f.key for f in gone.resolved] == [b.key]
    assert [r.key for r in await store.list_findings()] == [a.key]
    resolved = {r.key: r for r in await store.list_findings(include_resolved=True)}
    assert resolved[b.key].resolved_at == T0 + DAY

    back = await tick(T0 + 2 * DAY, [a, b], "run-3")
    assert [f.key for f in back.reopened] == [b.key]
    reopened = (await store.load_findings())[b.key]
    assert (reopened.first_seen, reopened.resolved_at, reopened.reopened_at) == (
        T0,
        None,
        T0 + 2 * DAY,
    )


async def test_list_and_load_findings(store: StateStore) -> None:
    records = [
        record("2001:db8::1"),
        record("203.0.113.10"),
        record("203.0.113.9", 11211),
        replace(record("203.0.113.9"), resolved_at=T0),
    ]
    await store.commit_tick(run_id="run-1", started_at=T0, upserts=records, messages=[])
    listed = await store.list_findings()
    assert [(str(r.address), r.port) for r in listed] == [
        ("203.0.113.9", 11211),
        ("203.0.113.10", 6379),
        ("2001:db8::1", 6379),
    ]
    assert len(await store.list_findings(include_resolved=True)) == 4
    on_nine = await store.load_findings([ip_address("203.0.113.9")])
    assert sorted(on_nine) == [("203.0.113.9", 6379, "tcp"), ("203.0.113.9", 11211, "tcp")]
    assert await store.load_findings([]) == {}
    # What a tick loads: everything on its addresses, and every open record anywhere (the
    # lifecycle marks those on hosts it did not scan as unmonitored); resolved elsewhere: not.
    for_tick = await store.load_findings([ip_address("203.0.113.10")], open_anywhere=True)
    assert sorted(for_tick) == [
        ("2001:db8::1", 6379, "tcp"),
        ("203.0.113.10", 6379, "tcp"),
        ("203.0.113.9", 11211, "tcp"),
    ]
    on_nine = await store.load_findings([ip_address("203.0.113.9")], open_anywhere=True)
    assert len(on_nine) == 4


async def test_finish_run_records_the_summary(store: StateStore, state_url: str) -> None:
    await store.commit_tick(run_id="run-1", started_at=T0, upserts=[], messages=[])
    await store.finish_run("run-1", finished_at=T0 + DAY, summary={"findings": 3})
    await store.finish_run("run-0", finished_at=T0, summary={"error": "inventory down"})
    rows = await query(state_url, select(runs.c.run_id, runs.c.summary).order_by(runs.c.run_id))
    assert [tuple(row) for row in rows] == [
        ("run-0", {"error": "inventory down"}),
        ("run-1", {"findings": 3}),
    ]


async def test_naive_times_are_refused(store: StateStore) -> None:
    with pytest.raises(StateError, match="timezone-aware"):
        await store.commit_tick(
            run_id="run-1", started_at=datetime(2026, 1, 1), upserts=[], messages=[]
        )


async def test_concurrent_writers_wait_instead_of_failing(store: StateStore) -> None:
    records = [record(f"203.0.113.{n}") for n in range(1, 60)]
    messages = [mail(f"owner{n}@x.example", [r]) for n, r in enumerate(records)]
    stored = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=records, messages=messages
    )
    results = await asyncio.gather(
        *(store.mark_sent(m.id, now=T0) for m in stored),
        store.commit_tick(run_id="run-2", started_at=T0 + DAY, upserts=records, messages=[]),
    )
    assert all(results[:-1])
    assert all(r.times_notified == 1 for r in (await store.load_findings()).values())


async def test_sqlite_file_is_created_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    opened = await StateStore.open(f"sqlite+aiosqlite:///{path}")
    await opened.aclose()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


async def test_open_failures_name_the_database_without_its_password(
    tmp_path: Path,
    postgres_server: str,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StateUnavailable, match=r"cannot use state\.url"):
        await StateStore.open(f"sqlite+aiosqlite:///{blocker}/state.db")

    url = make_url(postgres_server).set(password="s3cret-pw", database="no_such_db")
    with pytest.raises(StateUnavailable) as caught:
        await StateStore.open(url.render_as_string(hide_password=False))
    assert "s3cret-pw" not in str(caught.value)
    assert "***" in str(caught.value)
    assert "no_such_db" in str(caught.value)
