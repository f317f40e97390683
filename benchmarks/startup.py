"""How long a short command takes, whole process, from exec to exit (issue: a CLI that starts fast).

    python -m benchmarks.startup [--repeats 10]

Runs `goalkeeper --help`, `check-config` and `findings` on the shipped config.yaml (a throwaway
SQLite store for `findings`) and prints the median and best wall time of each, with the time
`python -c pass` takes on the same machine for scale. Printed, never judged.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _time(argv: list[str], env: dict[str, str], repeats: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), min(runs)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "state.db"
        env = {**os.environ, "GOALKEEPER_STATE__URL": f"sqlite+aiosqlite:///{store}"}
        cli = [sys.executable, "-m", "goalkeeper.cli", "--config", "config.yaml"]
        subprocess.run(
            [*cli, "findings"], env=env, cwd=ROOT, check=False, capture_output=True
        )  # exit 2 (no store yet): creates nothing; the scan below writes one
        import asyncio

        from goalkeeper.state.store import StateStore

        async def create() -> None:
            async with StateStore.opened(env["GOALKEEPER_STATE__URL"]):
                pass

        asyncio.run(create())
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "goalkeeper --help": [*cli, "--help"],
            "goalkeeper check-config": [*cli, "check-config"],
            "goalkeeper findings": [*cli, "findings"],
        }
        print(f"{'command':28} {'median':>8} {'best':>8}  ({args.repeats} runs)")
        for name, argv in cases.items():
            median, best = _time(argv, env, args.repeats)
            print(f"{name:28} {median:7.3f}s {best:7.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
