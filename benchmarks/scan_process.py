"""`goalkeeper scan` as a user runs it: the whole process, from exec to exit, against its tick.

    python -m benchmarks.scan_process [--hosts 4096] [--repeats 3]

Serves the benchmark's simulated cloud (benchmarks.scan_speed: floating IPs in 127.64.0.0/16,
fake OpenStack and Fleio, an SMTP sink, a fake Telegram) from a child process, writes a config
for it, and runs `python -m goalkeeper.cli --config ... scan --json` with connect scans on this
host's loopback, a fresh state store each time. Prints the process's wall time, the tick's own
`duration_seconds` from its JSON, and the difference: what start-up, delivery and exit add.
Printed, never judged (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.scan_speed import served_world, tcp_ports, tick_settings, world_of

# cli.entry(), with a time stamp between main() returning and the exit.
STAMPED = (
    "import gc, sys, time; from goalkeeper import cli; code = cli.main(sys.argv[1:]); "
    "gc.freeze(); print(f'returned {time.time()}', file=sys.stderr); sys.exit(code)"
)


def timeline(stderr: str, epoch: float) -> None:
    """Each log event's first and last time, in seconds from exec: where the process waits."""
    from datetime import datetime

    seen: dict[str, list[float]] = {}
    for line in stderr.splitlines():
        if line.startswith("returned "):
            seen["main() returned"] = [float(line.split()[1]) - epoch]
        try:
            event = json.loads(line)
        except ValueError:
            continue
        at = datetime.fromisoformat(event["timestamp"]).timestamp() - epoch
        seen.setdefault(event["event"], []).append(at)
    for name, times in sorted(seen.items(), key=lambda item: item[1][0]):
        print(f"  {times[0]:6.2f} .. {times[-1]:6.2f} s  x{len(times):<4} {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scan_process", description=__doc__)
    parser.add_argument("--hosts", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    world = world_of(args.hosts, tcp_ports())
    rows: list[tuple[float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="gk-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        with served_world(world, scratch_dir) as facts:
            for repeat in range(args.repeats):
                settings = tick_settings(facts, False, scratch / f"state-{repeat}.db")
                # Secrets through the environment, as the config file may not hold them.
                fleio_token = settings["inventory"]["fleio"].pop("token")
                telegram_token = settings["notify"]["telegram"].pop("token")
                config = scratch / "config.yaml"
                config.write_text(yaml.safe_dump(settings))
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("GOALKEEPER_")},
                    "OS_CLIENT_CONFIG_FILE": facts["clouds_yaml"],
                    "GOALKEEPER_INVENTORY__FLEIO__TOKEN": fleio_token,
                    "GOALKEEPER_NOTIFY__TELEGRAM__TOKEN": telegram_token,
                }
                profile = os.environ.get("GK_BENCH_PROFILE_FILE")
                python = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else [])]
                command = [*python, "-m", "goalkeeper.cli", "--config", str(config)]
                if os.environ.get("GK_BENCH_TIMELINE"):  # stamps: main() returned, then exit
                    command = [*python, "-c", STAMPED, "--config", str(config)]
                started = time.perf_counter()
                epoch = time.time()
                done = subprocess.run(
                    [*command, "scan", "--json"], env=env, capture_output=True, text=True
                )
                wall = time.perf_counter() - started
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
                tick = float(json.loads(done.stdout)["duration_seconds"])
                rows.append((wall, tick, wall - tick))
                if os.environ.get("GK_BENCH_TIMELINE"):
                    timeline(done.stderr, epoch)
    print(f"\ngoalkeeper scan, {args.hosts} hosts (connect scan, loopback), {args.repeats} runs")
    print(f"{'':10} {'process':>8} {'tick':>8} {'added':>8}")
    for n, (wall, tick, added) in enumerate(rows, 1):
        print(f"run {n:<6} {wall:7.2f}s {tick:7.2f}s {added:7.2f}s")
    medians = [statistics.median(column) for column in zip(*rows, strict=True)]
    print(f"{'median':10} {medians[0]:7.2f}s {medians[1]:7.2f}s {medians[2]:7.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
