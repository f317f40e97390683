"""How fast the staff console's findings page answers with 100,000 findings in SQLite.

The store is filled through its own writer (one tick's commit of every finding), then the
daemon's own app (probes + console) serves it on 127.0.0.1 and each request is timed from the
client: the default page, filtered pages, a deep page, a sort and one finding. The target is
under 300 ms for the findings page (issue 19). Addresses are data only (198.18.0.0/15).

    python -m benchmarks.console_findings [--findings 100000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import timedelta

import aiohttp

from benchmarks.state_record import T0, make_findings
from goalkeeper.console import Console
from goalkeeper.lifecycle import record_from_finding
from goalkeeper.metrics import Metrics
from goalkeeper.probes import build_app, start_http
from goalkeeper.state import StateStore, TickStats
from tests.test_probes import FakeControls, health

TOKEN = "benchmark-token"  # noqa: S105  # a loopback server of its own, for the run
PATHS = (
    "/console/findings",
    "/console/findings?service=redis",
    "/console/findings?owner=owner17%40",
    "/console/findings?address=198.18.1",
    "/console/findings?status=open&sort=address&order=asc",
    "/console/findings?page=1500",
    "/console/findings?size=500",
    "/console/findings/198.18.0.1_6379_tcp",
    "/console/",
)


async def fill(store: StateStore, count: int, owners: int) -> None:
    records = [record_from_finding(f) for f in make_findings(count, owners, T0)]
    started = time.perf_counter()
    await store.commit_tick(run_id="bench-1", started_at=T0, upserts=records, messages=[])
    by_service: dict[str, int] = {}
    for r in records:
        by_service[r.service] = by_service.get(r.service, 0) + 1
    for day in range(90):  # a tick a day for the trend chart
        run_id = f"bench-day-{day}"
        at = T0 - timedelta(days=day)
        stats = TickStats(run_id, at, 60.0, "success", count // 4, count // 4, by_service)
        await store.finish_run(run_id, finished_at=at, summary={}, started_at=at, stats=stats)
    print(f"filled {count:,} findings in {time.perf_counter() - started:.1f} s")


async def main(count: int, owners: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with StateStore.opened(f"sqlite+aiosqlite:///{folder}/state.db") as store:
            await fill(store, count, owners)
            console = Console(
                store.browse, admin_token=lambda: TOKEN, clock=lambda: T0, resend_seconds=300
            )
            app = build_app(FakeControls(), health=health(), registry=Metrics().registry,
                            admin_token=lambda: TOKEN, console=console)  # fmt: skip
            server = await start_http(app, host="127.0.0.1", port=0)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            try:
                async with aiohttp.ClientSession(headers=headers) as client:
                    for path in PATHS:
                        await _time(client, f"http://127.0.0.1:{server.port}{path}", repeats)
            finally:
                await server.aclose()


async def _time(client: aiohttp.ClientSession, url: str, repeats: int) -> None:
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        async with client.get(url) as response:
            await response.read()
            assert response.status == 200, (url, response.status)
        times.append((time.perf_counter() - started) * 1000)
    times = times[1:]  # the first warms SQLite's page cache
    path = url.split("/", 3)[3]
    print(f"/{path:<58} median {statistics.median(times):6.1f} ms  max {max(times):6.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--owners", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.findings, args.owners, args.repeats))
