"""`make bench`: scan speed side by side with nmap, in both scenarios, and mail throughput.

    python -m benchmarks [--large] [--sizes 1024 4096] [--repeats 3] [--scenarios loopback dropped]
                         [--slow-default 1024] [--skip-mail] [--json DIR]

As root each scenario runs in a network namespace created for it (benchmarks.netns) and deleted
afterwards; otherwise only `loopback` runs, with connect scans, on this host's 127.64.0.0/14.
Exits 1 when a Goalkeeper run missed an open port without the kernel having dropped a packet,
or reported one that was not open. Times are printed, never judged: see docs/performance.md.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from types import FrameType

from benchmarks import netns

LARGE = 16_384


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the namespace cleanup


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--large", action="store_true", help=f"also {LARGE} hosts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", default=["loopback", "dropped"])
    parser.add_argument(
        "--slow-default",
        type=int,
        nargs="*",
        default=[1024],
        help="sizes where default nmap runs in the dropped scenario (about 90 s per 1,024 hosts)",
    )
    parser.add_argument("--skip-mail", action="store_true")
    parser.add_argument(
        "--json", help="also write each scenario's runs to JSON-DIR/<scenario>.json"
    )
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # the scenario, in its namespace
    args = parser.parse_args()
    sizes = sorted({*args.sizes, *([LARGE] if args.large else [])})
    if args.inside:
        from benchmarks.scan_speed import main_inside

        return main_inside(args.inside, sizes, args.repeats, args.slow_default, args.json)
    signal.signal(signal.SIGTERM, _stop)
    why_not = netns.unavailable()
    status = 0
    for scenario in args.scenarios:
        if why_not and scenario != "loopback":
            print(f"\n{scenario}: skipped ({why_not})")
            continue
        argv = [sys.executable, "-m", "benchmarks", "--inside", scenario, "--repeats"]
        argv += [str(args.repeats), "--sizes", *map(str, sizes), "--slow-default"]
        argv += [str(size) for size in args.slow_default]
        argv += ["--json", args.json] if args.json else []
        sys.stdout.flush()
        if why_not:
            status |= subprocess.run(argv, check=False).returncode
            continue
        with netns.namespace(scenario) as name:
            status |= subprocess.run([*netns.inside(name), *argv], check=False).returncode
    if not args.skip_mail:
        from benchmarks.mail_throughput import main as mail_main

        status |= mail_main([])
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
