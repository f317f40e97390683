"""How long the state store takes to record a tick of 100,000 findings, on SQLite and PostgreSQL.

Two ticks a day apart, each timed in its parts: load the previous records, plan the lifecycle,
commit findings and one mail per owner in one transaction; then mark every mail sent (which
counts the notification on each finding). PostgreSQL is a throwaway cluster with fsync ON (the
real cost), or `TEST_GOALKEEPER_POSTGRES_URL`. The addresses are data only (198.18.0.0/15, the
benchmarking range): nothing is sent anywhere.

    python -m benchmarks.state_record [--findings 100000] [--owners 1000] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

from goalkeeper.lifecycle import Coverage, FindingKey, plan_lifecycle
from goalkeeper.model import Finding, OutgoingMail, Owner, Target, Transport
from goalkeeper.state import NewMessage, StateStore
from tests.db import URL_VARIABLE, create_database, drop_database, postgres_bin, throwaway_cluster

PORTS = ((6379, "redis"), (27017, "mongodb"), (9200, "elasticsearch"), (11211, "memcached"))
BASE = int(IPv4Address("198.18.0.0"))
T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


def make_findings(count: int, owners: int, now: datetime) -> list[Finding]:
    findings = []
    for n in range(count):
        address = IPv4Address(BASE + n // len(PORTS))
        port, service = PORTS[n % len(PORTS)]
        owner_no = (n // len(PORTS)) % owners
        owner = Owner(name=f"Owner {owner_no}", email=f"owner{owner_no}@customer.example")
        target = Target(
            address=address,
            server_name=f"server-{n // len(PORTS)}",
            server_id=f"srv-{n // len(PORTS):08d}",
            project_id=f"project-{owner_no}",
            project_name=f"project {owner_no}",
            owner=owner,
        )
        findings.append(
            Finding(
                address=address,
                port=port,
                protocol=Transport.TCP,
                service=service,
                target=target,
                first_seen=now,
                last_seen=now,
                evidence="open (syn-ack)",
            )
        )
    return findings


def make_messages(run_id: str, to_notify: list[Finding]) -> list[NewMessage]:
    by_owner: dict[str, list[FindingKey]] = defaultdict(list)
    for finding in to_notify:
        by_owner[finding.owner.email or ""].append(finding.key)
    return [
        NewMessage.email(
            OutgoingMail(
                recipient="security@example.com",
                sender="Goalkeeper <security@example.com>",
                subject=f"{len(keys)} exposed services",
                text="x" * 2_000,
                html="<p>" + "x" * 6_000 + "</p>",
                message_id=f"<{run_id}.{email}@goalkeeper>",
            ),
            recipient_key=email,
            finding_keys=keys,
        )
        for email, keys in by_owner.items()
    ]


async def one_database(url: str, count: int, owners: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    store = await StateStore.open(url)
    try:
        for tick, now in enumerate((T0, T0 + timedelta(days=1)), start=1):
            run_id = f"bench-{tick}"
            current = make_findings(count, owners, now)
            scanned = {f.address for f in current}
            started = time.perf_counter()
            previous = await store.load_findings(scanned, open_anywhere=True)  # as a tick does
            loaded = time.perf_counter()
            coverage = Coverage(
                scanned=frozenset(scanned),
                ports=frozenset((port, Transport.TCP) for port, _ in PORTS),
            )
            plan = plan_lifecycle(
                previous, current, coverage, now=now, reminder_days=1, notify_resolved=True
            )
            messages = make_messages(run_id, list(plan.to_notify))
            planned = time.perf_counter()
            stored = await store.commit_tick(
                run_id=run_id, started_at=now, upserts=plan.upserts, messages=messages
            )
            committed = time.perf_counter()
            for message in stored:
                await store.mark_sent(message.id, now=now)
            marked = time.perf_counter()
            timings[f"tick {tick} load"] = loaded - started
            timings[f"tick {tick} plan"] = planned - loaded
            timings[f"tick {tick} commit ({len(plan.upserts)} findings, {len(stored)} mails)"] = (
                committed - planned
            )
            timings[f"tick {tick} mark {len(stored)} mails sent"] = marked - committed
        assert len(await store.list_findings()) == count
    finally:
        await store.aclose()
    return timings


async def postgres(count: int, owners: int, admin_url: str) -> dict[str, float]:
    url = await create_database(admin_url)
    try:
        return await one_database(url, count, owners)
    finally:
        await drop_database(admin_url, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--owners", type=int, default=1_000)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        sqlite_url = f"sqlite+aiosqlite:///{scratch}/state.db"
        results["sqlite"] = asyncio.run(one_database(sqlite_url, args.findings, args.owners))
    if not args.skip_postgres:
        with ExitStack() as stack:
            admin_url = os.environ.get(URL_VARIABLE)
            if admin_url is None and postgres_bin() is None:
                raise SystemExit(
                    f"no PostgreSQL: install it, set {URL_VARIABLE}, or --skip-postgres"
                )
            if admin_url is None:
                admin_url = stack.enter_context(throwaway_cluster(durable=True))
            results["postgresql"] = asyncio.run(postgres(args.findings, args.owners, admin_url))
    width = max(len(step) for timings in results.values() for step in timings)
    for database, timings in results.items():
        print(f"{database}:")
        for step, seconds in timings.items():
            print(f"  {step:<{width}}  {seconds:8.2f} s")


if __name__ == "__main__":
    main()
