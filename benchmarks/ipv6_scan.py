"""An IPv6 scan side by side: plain `nmap -6` and Goalkeeper's scanner on the same targets.

    python -m benchmarks.ipv6_scan [--hosts 1024] [--repeats 3]

Root only: a namespace of its own (benchmarks.netns) whose `lo` holds `hosts` addresses of
fd00:66::/64 (unique local: nothing outside the namespace sees a packet), listeners on a
seventh of them, and then, `repeats` times in turn, a plain `nmap -6 -sS -Pn -n -T4` over them
and NmapScanner.scan() (SYN, its default pace and batching). Prints wall time and open ports
found by each; exits 1 when Goalkeeper found other open ports than were listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from ipaddress import IPv6Address, IPv6Network

from benchmarks import netns

BASE = IPv6Network("fd00:66::/64")
PORTS = (6379, 3306, 27017, 9200, 11211, 5432, 23, 2375)


def targets(hosts: int) -> list[IPv6Address]:
    return [BASE[n] for n in range(1, hosts + 1)]


async def _inside(hosts: int, repeats: int) -> dict[str, object]:
    from goalkeeper.config import ScanSettings
    from goalkeeper.model import PortSpec, Transport
    from goalkeeper.scanning.nmap import NmapScanner
    from goalkeeper_sim.listeners import PortListeners

    addresses = targets(hosts)
    opened = {(a, PORTS[i % len(PORTS)]) for i, a in enumerate(addresses) if i % 7 == 0}
    endpoints = [(a, p, Transport.TCP) for a, p in sorted(opened)]
    ports_arg = ",".join(map(str, PORTS))
    plain = ["nmap", "-6", "-sS", "-Pn", "-n", "-T4", "--open", "-oG", "-", "-p", ports_arg]
    specs = [PortSpec(p, Transport.TCP, f"port-{p}") for p in PORTS]
    settings = ScanSettings.model_validate(
        {"allow_loopback": True, "nmap_arguments": "-Pn -n -T4 --max-retries 1 --host-timeout 10m"}
    )
    times: dict[str, list[float]] = {"plain nmap -6": [], "goalkeeper": []}
    found: dict[str, int] = {}
    async with PortListeners(endpoints, unique_local=True):
        for _ in range(repeats):
            started = time.perf_counter()
            nmap = await asyncio.create_subprocess_exec(
                *plain, *map(str, addresses), stdout=asyncio.subprocess.PIPE
            )
            out = (await nmap.communicate())[0].decode()
            times["plain nmap -6"].append(time.perf_counter() - started)
            found["plain nmap -6"] = out.count("/open/")
            started = time.perf_counter()
            async with NmapScanner(settings) as scanner:
                result = await scanner.scan(addresses, specs)
            times["goalkeeper"].append(time.perf_counter() - started)
            found["goalkeeper"] = len(result.open_ports)
            got = {(p.address, p.port) for p in result.open_ports}
            if got != opened:
                raise SystemExit(f"goalkeeper found {len(got)} open ports, {len(opened)} listen")
    return {
        "hosts": hosts,
        "ports": len(PORTS),
        "listening": len(opened),
        "median_s": {k: round(statistics.median(v), 2) for k, v in times.items()},
        "open_found": found,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ipv6_scan", description=__doc__)
    parser.add_argument("--hosts", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        batch = "".join(f"address add {a}/64 dev lo nodad\n" for a in targets(args.hosts))
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-6", "-batch", "-"], input=batch, text=True, check=True)
        print(json.dumps(asyncio.run(_inside(args.hosts, args.repeats))))
        return 0
    if (why := netns.unavailable()) is not None:
        print(f"skipped: {why}", file=sys.stderr)
        return 0
    with netns.namespace("ipv6") as name:
        argv = [*netns.inside(name), sys.executable, "-m", "benchmarks.ipv6_scan", "--inside"]
        argv += ["--hosts", str(args.hosts), "--repeats", str(args.repeats)]
        done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return 1
    result = json.loads(done.stdout.splitlines()[-1])  # after the scanner's log lines
    print(f"IPv6 scan of {result['hosts']} hosts x {result['ports']} TCP ports "
          f"({result['listening']} listening), median of {args.repeats}:")  # fmt: skip
    for label, seconds in result["median_s"].items():
        print(f"  {label:<14} {seconds:>7.2f} s   open ports found: {result['open_found'][label]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
