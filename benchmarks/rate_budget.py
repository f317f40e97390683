"""The rate budget: does a scan at the default ceilings use all of `max_rate`, and no subnet more
than `max_rate_per_subnet`?

    python -m benchmarks.rate_budget [--hosts 1024] [--ports 20] [--repeats 3]

As root only: it creates a network namespace (benchmarks.netns), and inside it scans 127.64.0.0/22
(`--hosts` addresses over /24s, every one on the namespace's own loopback, a few with a listener)
with Goalkeeper's scan stage at the default ceilings (`scan.max_rate` 10,000/s,
`scan.max_rate_per_subnet` 5,000/s, raw SYN scan, one source address: one nmap run). A packet
socket on that loopback counts every probe (a TCP SYN without ACK to a target) by its kernel
timestamp, so the benchmark reports:

- the scan stage's wall time against probes ÷ `min(max_rate, subnets * max_rate_per_subnet)`,
  the least time the budget allows;
- the most probes any /24 received in any one second (a sliding one-second window), against
  `max_rate_per_subnet`;
- the same for plain nmap at `--max-rate`/`--min-rate` 5,000 (how a scan ran before a run over
  several subnets could use their shares together) and at 10,000.

Open ports found are checked against the listeners (exit 1 on a miss or a false positive).
Nothing leaves the namespace; nothing is judged on time (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import ipaddress
import multiprocessing
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from multiprocessing.connection import Connection

from benchmarks import netns

BASE = ipaddress.IPv4Network("127.64.0.0/16")
ETH_P_IP = 0x0800
SO_TIMESTAMPNS = 35
OPEN_EVERY = 50  # one listener per 50 hosts, on the first port


@dataclass(frozen=True, slots=True)
class Measured:
    label: str
    wall: float
    probes: int
    peak_per_subnet: int  # most probes to one /24 in any one-second window
    peak: int  # most probes to all targets in any one-second window
    found: frozenset[tuple[str, int]]


def targets(hosts: int) -> list[IPv4Address]:
    return [BASE.network_address + n for n in range(hosts)]


def sniff(channel: Connection, first: int, last: int) -> None:
    """Child process: count SYN probes to [first, last] by kernel time until told to stop."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("lo", ETH_P_IP))
    sock.settimeout(0.2)
    stamps: list[tuple[float, int]] = []
    channel.send("ready")
    while not channel.poll():
        try:
            data, ancillary, _, _ = sock.recvmsg(128, 64)
        except TimeoutError:
            continue
        # On loopback a packet socket sees each packet once, as received (sll_pkttype HOST).
        if len(data) < 40 or data[9] != socket.IPPROTO_TCP:
            continue
        destination = int.from_bytes(data[16:20], "big")
        flags = data[(data[0] & 0x0F) * 4 + 13]
        if first <= destination <= last and flags & 0x12 == 0x02:  # SYN, not SYN-ACK
            seconds, nanoseconds = struct.unpack("qq", ancillary[0][2][:16])
            stamps.append((seconds + nanoseconds / 1e9, destination >> 8))
    channel.recv()
    channel.send(stamps)


def peak_per_subnet(stamps: Sequence[tuple[float, int]]) -> int:
    """The most probes one /24 got in any window of one second."""
    by_subnet: dict[int, list[float]] = defaultdict(list)
    for stamp, subnet in stamps:
        by_subnet[subnet].append(stamp)
    return max((window_peak(times) for times in by_subnet.values()), default=0)


def window_peak(times: list[float]) -> int:
    """The most of `times` in any window of one second."""
    times.sort()
    return max(
        (bisect.bisect_right(times, t + 1.0) - start for start, t in enumerate(times)), default=0
    )


def counted(
    label: str, hosts: list[IPv4Address], scan: Callable[[], set[tuple[str, int]]]
) -> Measured:
    """Run `scan` (a zero-argument callable returning the open ports) with the sniffer on."""
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(
        target=sniff, args=(theirs, int(hosts[0]), int(hosts[-1])), daemon=True
    )
    child.start()
    assert ours.recv() == "ready"
    started = time.perf_counter()
    found = scan()
    wall = time.perf_counter() - started
    time.sleep(0.3)  # the last probes' copies reach the socket
    ours.send("stop")
    stamps = ours.recv()
    child.join(timeout=10)
    return Measured(
        label,
        wall,
        len(stamps),
        peak_per_subnet(stamps),
        window_peak([stamp for stamp, _ in stamps]),
        frozenset(found),
    )


def goalkeeper_scan(hosts: list[IPv4Address], ports: list[int]) -> set[tuple[str, int]]:
    from goalkeeper.config import ScanSettings
    from goalkeeper.model import PortSpec, Transport
    from goalkeeper.scanning.nmap import NmapScanner

    settings = ScanSettings.model_validate(
        {"allowed_networks": ["127.0.0.0/8"], "allow_loopback": True, "privileged": True}
    )
    specs = [PortSpec(port=port, protocol=Transport.TCP, service=f"p{port}") for port in ports]

    async def run() -> set[tuple[str, int]]:
        scanner = NmapScanner(settings)
        try:
            result = await scanner.scan(hosts, specs)
        finally:
            await scanner.aclose()
        return {(str(p.address), p.port) for p in result.open_ports}

    return asyncio.run(run())


def plain_nmap(hosts: list[IPv4Address], ports: list[int], rate: int) -> set[tuple[str, int]]:
    argv = ["nmap", "-Pn", "-n", "-T4", "--max-retries", "1", "--open", "-sS", "-oG", "-"]
    argv += ["-p", ",".join(map(str, ports)), "--max-rate", str(rate), "--min-rate", str(rate)]
    argv += ["--min-hostgroup", str(len(hosts)), "--max-hostgroup", str(len(hosts))]
    argv += ["-iL", "-"]
    listing = "".join(f"{host}\n" for host in hosts)
    out = subprocess.run(argv, input=listing, capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        if "Ports:" not in line:
            continue
        address = line.split()[1]
        for entry in line.split("Ports:")[1].split(","):
            port, state = entry.strip().split("/")[:2]
            if state == "open":
                found.add((address, int(port)))
    return found


def inside(hosts_count: int, port_count: int, repeats: int) -> int:
    from goalkeeper.model import Transport
    from goalkeeper.scanning.catalog import load_catalog

    here = subprocess.run(["ip", "netns", "identify"], capture_output=True, text=True, check=True)
    if not here.stdout.strip().startswith(netns.PREFIX):
        raise SystemExit("refusing to run outside a gk-bench namespace")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hosts = targets(hosts_count)
    catalog = sorted({p.port for p in load_catalog().ports if p.protocol is Transport.TCP})
    ports = catalog[:port_count]
    listeners = []
    truth = set()
    for host in hosts[1::OPEN_EVERY]:
        listener = socket.create_server((str(host), ports[0]))
        listeners.append(listener)
        truth.add((str(host), ports[0]))
    runs: dict[str, list[Measured]] = defaultdict(list)
    for _ in range(repeats):
        runs["goalkeeper (defaults)"].append(
            counted("goalkeeper", hosts, lambda: goalkeeper_scan(hosts, ports))
        )
        for rate in (5_000, 10_000):
            runs[f"plain nmap at {rate}/s"].append(
                counted("nmap", hosts, functools.partial(plain_nmap, hosts, ports, rate))
            )
    for listener in listeners:
        listener.close()
    subnets = -(-hosts_count // 256)
    print(f"\n{hosts_count} hosts over {subnets} /24s x {len(ports)} TCP ports, {len(truth)} open")
    # The least time both ceilings allow: max_rate, or all the subnets each at their ceiling.
    allowed = min(10_000, subnets * 5_000)
    print(f"(medians of {repeats}; max_rate 10000/s, max_rate_per_subnet 5000/s: {allowed}/s)")
    columns = [("wall s", 7), ("probes", 7), ("budget s", 8), ("ratio", 6), ("peak/s", 7)]
    columns += [("peak/24/s", 9), ("miss", 5)]
    print(f"{'':24} " + " ".join(f"{name:>{width}}" for name, width in columns))
    status = 0
    for label, measured in runs.items():
        wall = statistics.median(m.wall for m in measured)
        probes = int(statistics.median(m.probes for m in measured))
        budget = probes / allowed
        peak = max(m.peak_per_subnet for m in measured)
        peak_all = max(m.peak for m in measured)
        misses = max(len(truth - m.found) for m in measured)
        false = max(len(m.found - truth) for m in measured)
        status |= 1 if (misses or false) and label.startswith("goalkeeper") else 0
        print(
            f"{label:24} {wall:7.2f} {probes:7d} {budget:8.2f} {wall / budget:6.2f} "
            f"{peak_all:7d} {peak:9d} {misses:5d}"
            + (f"  false positives: {false}" if false else "")
        )
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rate_budget", description=__doc__)
    parser.add_argument("--hosts", type=int, default=1024)
    parser.add_argument("--ports", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.hosts <= 65_536:
        parser.error("--hosts must be 1..65536")
    if args.inside:
        return inside(args.hosts, args.ports, args.repeats)
    why_not = netns.unavailable()
    if why_not:
        print(f"rate budget: skipped ({why_not})")
        return 0
    command = [sys.executable, "-m", "benchmarks.rate_budget", "--inside"]
    command += ["--hosts", str(args.hosts), "--ports", str(args.ports)]
    command += ["--repeats", str(args.repeats)]
    with netns.namespace("rate") as name:
        return subprocess.run([*netns.inside(name), *command], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
