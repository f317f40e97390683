"""Network namespaces for scanner tests that need packets dropped or hosts cut off.

A test creates a namespace of its own (`network_namespace()`), and `scan_in_namespace()` runs
this file as a child process inside it (`ip netns exec NS python -m tests.netns`): the child
brings up the namespace's `lo` (with any extra addresses the scenario gives it: IPv6 ones come
from fd00::/8, unique local), loads an nftables ruleset there, starts PortListeners, runs the
real NmapScanner and prints each ScanResult as JSON. Every packet stays in that namespace, which
has nothing but its own loopback, and the namespace is deleted when the test ends. Needs root and
the `ip` and `nft` tools; `namespace_unavailable()` says why a test must skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
CHILD_DEADLINE_SECONDS = 120.0
NAMESPACE_PREFIX = "gk-test-"


@dataclass(frozen=True)
class NamespaceScan:
    """One NmapScanner.scan() call made inside the namespace."""

    addresses: Sequence[str]
    ports: Sequence[tuple[int, str, str]]  # (port, "tcp"|"udp", service)
    scan: dict[str, Any] = field(default_factory=dict)  # ScanSettings fields


@dataclass(frozen=True)
class NamespaceScenario:
    scans: Sequence[NamespaceScan]
    listeners: Sequence[tuple[str, int, str]] = ()  # (address, port, "tcp"|"udp")
    nft_ruleset: str = ""  # loaded with `nft -f -` inside the namespace
    lo_addresses: Sequence[
        str
    ] = ()  # CIDR addresses added to the namespace's lo, as "fd00:6::1/64"


def namespace_unavailable() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces and nftables rules"
    missing = [tool for tool in ("ip", "nft", "nmap") if shutil.which(tool) is None]
    if missing:
        return f"needs {' and '.join(missing)} installed"
    return None


@contextmanager
def network_namespace() -> Iterator[str]:
    """A fresh, empty network namespace, deleted on exit whatever happened."""
    name = NAMESPACE_PREFIX + secrets.token_hex(4)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True, capture_output=True)


async def scan_in_namespace(namespace: str, scenario: NamespaceScenario) -> list[dict[str, Any]]:
    """Run `scenario` inside `namespace`; one JSON-shaped ScanResult per scan, in order."""
    child = await asyncio.create_subprocess_exec(
        *("ip", "netns", "exec", namespace, sys.executable, "-m", "tests.netns"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPOSITORY,
    )
    try:
        async with asyncio.timeout(CHILD_DEADLINE_SECONDS):
            out, err = await child.communicate(json.dumps(asdict(scenario)).encode())
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise AssertionError(f"the scan inside {namespace} failed:\n{err.decode()}")
    results: list[dict[str, Any]] = json.loads(out)
    return results


async def _run_scenario(spec: dict[str, Any]) -> list[dict[str, Any]]:
    from goalkeeper.config import ScanSettings
    from goalkeeper.model import PortSpec, Transport
    from goalkeeper.scanning.nmap import NmapScanner
    from goalkeeper_sim.listeners import PortListeners

    endpoints = [(ip_address(a), int(p), Transport(t)) for a, p, t in spec["listeners"]]
    results = []
    async with PortListeners(endpoints, unique_local=True):  # fd00:: is on this namespace's lo
        for scan in spec["scans"]:
            ports = [PortSpec(int(p), Transport(t), s) for p, t, s in scan["ports"]]
            # The namespace's loopback is all there is to scan in it.
            scan_settings = ScanSettings.model_validate({"allow_loopback": True, **scan["scan"]})
            async with NmapScanner(scan_settings) as scanner:
                result = await scanner.scan([ip_address(a) for a in scan["addresses"]], ports)
            results.append(
                {
                    "scanned": sorted(str(a) for a in result.scanned),
                    "open_ports": [
                        [str(p.address), p.port, str(p.protocol), p.evidence]
                        for p in result.open_ports
                    ],
                    "not_scanned": {str(a): why for a, why in result.not_scanned.items()},
                    "failed_batches": result.failed_batches,
                    "nmap_runs": result.nmap_runs,
                    "warnings": list(result.warnings),
                }
            )
    return results


def _child() -> None:
    """Inside the namespace: set it up, scan, print JSON on stdout (logs go to stderr)."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    here = subprocess.run(["ip", "netns", "identify"], capture_output=True, text=True, check=True)
    if not here.stdout.strip().startswith(NAMESPACE_PREFIX):
        sys.exit("refusing to touch this network: run me only via scan_in_namespace()")
    spec = json.load(sys.stdin)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for cidr in spec["lo_addresses"]:
        family = "-6" if ":" in cidr else "-4"
        # nodad: usable at once; duplicate address detection has no neighbour to ask on lo.
        extra = ["nodad"] if family == "-6" else []
        subprocess.run(["ip", family, "addr", "add", cidr, "dev", "lo", *extra], check=True)
    if spec["nft_ruleset"]:
        subprocess.run(["nft", "-f", "-"], input=spec["nft_ruleset"], text=True, check=True)
    print(json.dumps(asyncio.run(_run_scenario(spec))))


if __name__ == "__main__":
    _child()
