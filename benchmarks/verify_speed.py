"""Verification cost beside the port scan (issue 14, DESIGN §7): both stages of one scan.

    python -m benchmarks.verify_speed [--hosts 4096] [--share 0.02] [--json FILE]

Builds `hosts` loopback addresses in 127.66.0.0/16 (this host's loopback only; nothing else is
ever sent to), opens about `share` of the (host, catalog TCP port) pairs with the simulator's
listeners (accept and close, as goalkeeper_sim/world.py's are), and puts real services on a few
more: redis-server with and without requirepass, memcached, vsftpd, when installed. Then one
VerifyingScanner.scan() with connect scans, as an unprivileged scanner runs: the port scan's wall
time, the verification stage's, their ratio, and the wall time of the runs per service. Times are
printed, never judged: docs/performance.md keeps the measured numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import tempfile
from ipaddress import IPv4Address
from pathlib import Path

from goalkeeper.config import ScanSettings
from goalkeeper.model import Transport
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.scanning.nmap import NmapScanner
from goalkeeper.scanning.verify import VerifyingScanner
from goalkeeper_sim.listeners import PortListeners

BASE = int(IPv4Address("127.66.0.1"))
SEED = 14  # the same world every run


def _real_services(scratch: Path, first: int) -> tuple[list[subprocess.Popen[bytes]], int]:
    """Real servers on the addresses after the world's, as many as are installed."""
    (scratch / "empty").mkdir()
    conf = scratch / "vsftpd.conf"
    address = [str(IPv4Address(first + n)) for n in range(4)]
    conf.write_text(
        f"listen=YES\nlisten_address={address[3]}\nbackground=NO\nanonymous_enable=YES\n"
        f"anon_root={scratch}\nno_anon_password=YES\nsecure_chroot_dir={scratch / 'empty'}\n"
        "run_as_launching_user=YES\nseccomp_sandbox=NO\n"
    )
    wanted = [
        ["redis-server", "--bind", address[0], "--save", "", "--protected-mode", "no"],
        ["redis-server", "--bind", address[1], "--save", "", "--requirepass", "not-real"],
        ["memcached", "-l", address[2], "-U", "0", "-u", "root"],
        ["vsftpd", str(conf)],
    ]
    started = []
    for argv in wanted:
        binary = shutil.which(argv[0])
        if binary is not None:
            started.append(
                subprocess.Popen(
                    [binary, *argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
    return started, len(address)


async def measure(hosts: int, share: float) -> dict[str, object]:
    ports = [p for p in load_catalog().ports if p.protocol is Transport.TCP]
    rng = random.Random(SEED)
    addresses = [IPv4Address(BASE + n) for n in range(hosts)]
    pairs = [(a, p.port, Transport.TCP) for a in addresses for p in ports if rng.random() < share]
    settings = ScanSettings.model_validate(
        {"privileged": False, "allow_loopback": True, "nmap_arguments": "-Pn -n -T4"}
    )
    with tempfile.TemporaryDirectory(prefix="goalkeeper-verify-bench-") as scratch:
        servers, extra = _real_services(Path(scratch), BASE + hosts)
        try:
            await asyncio.sleep(1)  # the real servers start on their own; nothing to await
            targets = [*addresses, *(IPv4Address(BASE + hosts + n) for n in range(extra))]
            async with PortListeners(pairs):
                scanner = VerifyingScanner(NmapScanner(settings), settings, load_catalog())
                async with scanner:
                    result = await scanner.scan(targets, list(ports))
                timings = dict(scanner.timings)
        finally:
            for server in servers:
                server.kill()
                server.wait()
    grades: dict[str, int] = {}
    for pair in result.open_ports:
        grades[str(pair.grade)] = grades.get(str(pair.grade), 0) + 1
    return {
        "hosts": len(targets),
        "ports": len(ports),
        "open_pairs": len(result.open_ports),
        "open_share": round(len(result.open_ports) / (len(targets) * len(ports)), 4),
        "scan_s": round(timings["scan"], 2),
        "verify_s": round(timings["verify"], 2),
        "ratio": round(timings["verify"] / timings["scan"], 3),
        "per_service_s": {
            k.removeprefix("verify:"): round(v, 2)
            for k, v in sorted(timings.items())
            if k.startswith("verify:")
        },
        "grades": grades,
        "nmap_runs": result.nmap_runs,
        "cores": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4096)
    parser.add_argument("--share", type=float, default=0.02)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    numbers = asyncio.run(measure(args.hosts, args.share))
    text = json.dumps(numbers, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
