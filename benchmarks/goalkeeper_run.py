"""One measured Goalkeeper run in a fresh interpreter: the scan stage alone, or a whole tick.

    python -m benchmarks.goalkeeper_run scan|tick JOB.json

`scan` hands NmapScanner.scan() the job's addresses and ports; `tick` runs
goalkeeper.wiring.one_tick() with the job's settings (the simulated OpenStack and Fleio, the
SMTP sink), exactly as `goalkeeper scan` does. Logs go to a file at the daemon's level (info, JSON)
because writing them is part of the daemon's cost. Prints one JSON object on stdout: wall time,
CPU of this process and its nmap children, peak RSS of each, and the open ports found. It only
scans what the job names; the harness gives it loopback addresses or its own namespace's.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from benchmarks.measure import NmapPeak
from goalkeeper import logs
from goalkeeper.config import ScanSettings, Settings
from goalkeeper.model import PortSpec, Transport
from goalkeeper.scanning.nmap import NmapScanner

PROFILE_VARIABLE = "GK_BENCH_PROFILE"


async def scan_stage(job: dict[str, Any]) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    settings = ScanSettings.model_validate(job["scan"])
    addresses = [ip_address(text) for text in job["addresses"]]
    ports = [PortSpec(int(port), Transport.TCP, "bench") for port in job["ports"]]
    async with NmapScanner(settings) as scanner:
        result = await scanner.scan(addresses, ports)
    found = [(str(p.address), p.port) for p in result.open_ports]
    return found, {
        "scanned": len(result.scanned),
        "not_scanned": len(result.not_scanned),
        "nmap_runs": result.nmap_runs,
    }


async def whole_tick(job: dict[str, Any]) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    from goalkeeper.wiring import one_tick  # the daemon's whole weight: only in this mode

    os.environ.update(job.get("environment", {}))
    settings = Settings.model_validate(job["settings"])
    report = await one_tick(settings, Path(job["config_path"]))
    found = [(str(f.address), f.port) for f in report.findings]
    return found, {
        "targets": report.targets,
        "scanned": report.hosts_scanned,
        "not_scanned": len(report.not_scanned),
        "mails": len(report.mails),
        "mails_delivered": sum(m.delivered for m in report.mails),
        "to_outbox": report.duration_seconds,  # the tick's own clock: up to the outbox commit
    }


@contextmanager
def _profiled(output: str | None, mode: str) -> Iterator[None]:
    """With GK_BENCH_PROFILE=FILE, pyinstrument's text profile goes to FILE.scan or FILE.tick (the
    profiler is a development tool: `pip install pyinstrument` into the venv to use it)."""
    if not output:
        yield
        return
    from pyinstrument import Profiler  # type: ignore[import-not-found, unused-ignore]

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        text = profiler.output_text(show_all=False)
        Path(f"{output}.{mode}").write_text(text, encoding="utf-8")


def main() -> None:
    mode, job_path = sys.argv[1], Path(sys.argv[2])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    with (job_path.parent / f"{mode}.log").open("w", encoding="utf-8") as log_file:
        logs.configure(level="info", fmt="json", stream=log_file)
        run = scan_stage if mode == "scan" else whole_tick
        own, children = resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN
        before = resource.getrusage(own)
        started = time.perf_counter()
        with NmapPeak(os.getpid()) as peak, _profiled(os.environ.get(PROFILE_VARIABLE), mode):
            found, facts = asyncio.run(run(job))
        wall = time.perf_counter() - started
        after, nmap = resource.getrusage(own), resource.getrusage(children)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    report = {
        "wall": wall,
        "cpu": cpu + nmap.ru_utime + nmap.ru_stime,
        "python_cpu": cpu,
        "nmap_rss": peak.mib,
        "python_rss": after.ru_maxrss / 1024,
        "found": found,
        **facts,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
