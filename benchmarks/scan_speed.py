"""Scan speed side by side: plain nmap, Goalkeeper's scan stage, Goalkeeper's whole tick.

Run by `python -m benchmarks` inside a network namespace that the benchmark creates (as root), or on
the host's loopback with connect scans (not root). For each size it builds a simulated cloud
(goalkeeper_sim/world.py: every public address a floating IP in 127.64.0.0/16, a few percent of host
and port pairs open), serves it from a child process (fake OpenStack and Fleio, the listeners, an
SMTP sink, a fake Telegram), and measures, `repeats` times in turn: default nmap, the best tuned
single nmap, NmapScanner.scan(), and goalkeeper.wiring.one_tick(). Scenario `dropped` loads an
nftables ruleset in the namespace that silences every closed port (no RST, no ICMP), as an OpenStack
security group does. Ground truth is the listeners that were opened. This module only ever sends to
127.0.0.0/8 inside the namespace it is run in, and refuses to run a `dropped` scenario anywhere but
in a namespace named by benchmarks.netns.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import statistics
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.measure import Port, Run, run_goalkeeper, run_nmap
from goalkeeper.model import Transport
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper_sim.cloud import SIM_CLOUD_NAME, SimulatedCloud
from goalkeeper_sim.smtp import SmtpSink
from goalkeeper_sim.telegram import FakeTelegram
from goalkeeper_sim.world import World, build_world

TARGETS = "127.64.0.0/14"  # the simulated world's address base: floating IPs in 127.64.0.0/16
SOURCES = ("127.63.0.1", "127.63.0.2")  # one per core: each nmap run captures only its replies
SERVERS_PER_PROJECT = 8
OPEN_SHARE = 0.5  # of servers; each opens 1-2 of the ~30 TCP ports: about 2 % of pairs
DROP_CLOSED_PORTS = """
table inet goalkeeper_bench {
  chain output {
    type filter hook output priority 0; policy accept;
    ip saddr 127.64.0.0/14 tcp flags & rst == rst drop
    ip saddr 127.64.0.0/14 icmp type destination-unreachable drop
  }
}
"""
TUNED = [
    "--open",
    "--max-retries",
    "1",
    "--min-hostgroup",
    "1024",
    "--max-hostgroup",
    "1024",
    "--min-rate",
    "100000",
    "--min-parallelism",
    "4096",
]
# Loopback and one namespace carry far more than any production network: the ceilings here are
# high so that the scan shows what the plan costs, but they are still set and still passed.
BENCH_CEILINGS = {"max_rate": 400_000, "max_rate_per_subnet": 200_000}
OPS = "security@provider.example"
OUTBOX = "  to the outbox"


def mode_of(how: Any) -> str | None:
    return how[0] if isinstance(how, tuple) else None


@dataclass(frozen=True)
class Size:
    hosts: int
    runs: dict[str, list[Run]]
    open_pairs: int


def tcp_ports() -> list[int]:
    return sorted({p.port for p in load_catalog().ports if p.protocol is Transport.TCP})


def world_of(hosts: int, ports: Sequence[int]) -> World:
    catalog = [p for p in load_catalog().ports if p.protocol is Transport.TCP and p.port in ports]
    return build_world(
        hosts,
        projects=math.ceil(hosts / SERVERS_PER_PROJECT),
        servers_per_project=SERVERS_PER_PROJECT,
        floating_ip_share=1.0,
        public_fixed_share=0.0,
        unassociated_floating_ips=0,
        open_share=OPEN_SHARE,
        services=catalog,
    )


@contextmanager
def served_world(world: World, scratch_dir: str) -> Iterator[dict[str, Any]]:
    """`world` served from a child process while the block runs; yields what the child says of
    it (clouds.yaml, the Fleio URL and token, the SMTP and Telegram addresses)."""
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=serve_world, args=(theirs, world, scratch_dir), daemon=True
    )
    child.start()
    try:
        facts: dict[str, Any] = ours.recv()
        yield facts
    finally:
        ours.send("stop")
        child.join(timeout=60)


def serve_world(channel: Connection, world: World, scratch: str) -> None:
    """The child process: serve `world` until told 'stop'."""
    asyncio.run(_serve(channel, world, Path(scratch)))


async def _serve(channel: Connection, world: World, scratch: Path) -> None:
    async with (
        SimulatedCloud(world) as cloud,
        SmtpSink() as smtp,
        FakeTelegram() as telegram,
    ):
        channel.send(
            {
                "clouds_yaml": str(cloud.write_clouds_yaml(scratch / "clouds.yaml")),
                "fleio_url": cloud.fleio_url,
                "fleio_token": cloud.fleio_token,
                "smtp": [smtp.host, smtp.port],
                "telegram": [telegram.url, telegram.token],
            }
        )
        loop = asyncio.get_running_loop()
        while (command := await loop.run_in_executor(None, channel.recv)) != "stop":
            if command == "mails":
                channel.send(len(smtp.messages))


def scan_settings(privileged: bool) -> dict[str, Any]:
    return {
        "allow_loopback": True,  # every target is on this host's (or the namespace's) loopback
        "privileged": privileged,
        "source_addresses": list(SOURCES) if privileged else [],
        **BENCH_CEILINGS,
    }


def tick_settings(facts: dict[str, Any], privileged: bool, state_file: Path) -> dict[str, Any]:
    smtp_host, smtp_port = facts["smtp"]
    telegram_url, telegram_token = facts["telegram"]
    return {
        "environment": "prod",
        "scan": {
            "allowed_networks": [TARGETS],
            # The same TCP ports as every other run (the catalog's UDP ports are left out).
            "ports": [
                {"port": p.port, "protocol": "tcp", "service": p.service}
                for p in load_catalog().ports
                if p.protocol is Transport.TCP
            ],
            **scan_settings(privileged),
        },
        "inventory": {
            "source": "openstack",
            "openstack": {"cloud": SIM_CLOUD_NAME, "api_timeout": 300},
            "fleio": {"url": facts["fleio_url"], "token": facts["fleio_token"]},
        },
        "notify": {
            "send_to_customers": True,
            "ops_email": OPS,
            "sender": f"Goalkeeper <{OPS}>",
            "email": {"host": smtp_host, "port": smtp_port, "starttls": False},
            "telegram": {
                "enabled": True,
                "token": telegram_token,
                "chat_id": "-1001000000001",
                "api_base": telegram_url,
            },
        },
        "state": {"url": f"sqlite+aiosqlite:///{state_file}"},
    }


def measure_size(
    hosts: int, *, scenario: str, repeats: int, slow_reference: bool, privileged: bool
) -> Size:
    """Every run for one size, `repeats` times in turn (the slow default nmap maybe once)."""
    ports = tcp_ports()
    world = world_of(hosts, ports)
    truth: set[Port] = {(str(a), p) for a, p, _ in world.exposed()}
    targets = sorted(world.public_addresses())
    in_namespace = privileged
    runs: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="gk-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        target_file = scratch / "targets"
        target_file.write_text("".join(f"{a}\n" for a in targets), encoding="utf-8")
        scan_type = "-sS" if privileged else "-sT"
        base = ["nmap", scan_type, "-Pn", "-n", "-T4", "-p", ",".join(map(str, ports))]
        base += ["-iL", str(target_file)]
        with served_world(world, scratch_dir) as facts:
            scan_job = {
                "scan": scan_settings(privileged),
                "addresses": [str(a) for a in targets],
                "ports": ports,
            }
            for repeat in range(repeats):
                # A fresh state store each time: every run is a first tick, every finding new
                # and every owner mailed (a second tick the same day would mail nobody).
                tick_job = {
                    "settings": tick_settings(facts, privileged, scratch / f"state-{repeat}.db"),
                    "config_path": str(scratch / "config.yaml"),
                    "environment": {"OS_CLIENT_CONFIG_FILE": facts["clouds_yaml"]},
                }
                plan: list[tuple[str, Any]] = []
                if slow_reference and (repeat == 0 or scenario == "loopback"):
                    plan.append(("default nmap", base))
                plan += [
                    ("tuned nmap", [*base, *TUNED]),
                    ("Goalkeeper scan", ("scan", scan_job)),
                    ("Goalkeeper tick", ("tick", tick_job)),
                ]
                for label, how in plan:
                    if label.endswith("nmap"):
                        run = run_nmap(label, how, truth, scratch, namespace_local=in_namespace)
                    else:
                        mode, job = how
                        run = run_goalkeeper(
                            label, mode, job, truth, scratch, namespace_local=in_namespace
                        )
                    runs.setdefault(label, []).append(run)
                    if mode_of(how) == "tick":
                        # What the daemon's tick waits for: delivery then goes on in its workers.
                        outbox = replace(
                            run, label=OUTBOX, wall=run.notes["to_outbox"], cpu=math.nan
                        )
                        runs.setdefault(OUTBOX, []).append(outbox)
    return Size(hosts=hosts, runs=runs, open_pairs=len(truth))


def load_scenario(scenario: str) -> None:
    """Inside our namespace: bring up its loopback, and for `dropped` silence closed ports."""
    here = subprocess.run(["ip", "netns", "identify"], capture_output=True, text=True, check=True)
    if not here.stdout.strip().startswith("gk-bench-"):
        raise SystemExit("refusing to change this network: run only inside a gk-bench namespace")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if scenario == "dropped":
        subprocess.run(["nft", "-f", "-"], input=DROP_CLOSED_PORTS, text=True, check=True)


def median(runs: Sequence[Run], attribute: str) -> float:
    return float(statistics.median(getattr(run, attribute) for run in runs))


def report(scenario: str, sizes: Sequence[Size]) -> list[str]:
    """Print one table per size; return the failures (misses without packet loss)."""
    failures = []
    for size in sizes:
        print(
            f"\n{scenario}: {size.hosts} hosts x {len(tcp_ports())} TCP ports, "
            f"{size.open_pairs} open (medians of {max(len(r) for r in size.runs.values())} runs)"
        )
        print(
            f"  {'run':<16}{'wall s':>8}{'CPU s':>8}{'nmap MiB':>10}{'py MiB':>8}"
            f"{'x default':>11}{'x tuned':>9}{'misses':>8}{'false+':>7}{'lost':>6}"
        )
        default = size.runs.get("default nmap")
        tuned = size.runs["tuned nmap"]
        for label, runs in size.runs.items():
            wall = median(runs, "wall")
            python = median(runs, "python_rss") if runs[0].python_rss is not None else None
            ratio_default = f"{wall / median(default, 'wall'):.3f}" if default else "-"
            misses, lost = max(r.misses for r in runs), max(r.lost_packets for r in runs)
            cpu = median(runs, "cpu")
            print(
                f"  {label:<16}{wall:>8.2f}{'-' if math.isnan(cpu) else f'{cpu:.2f}':>8}"
                f"{median(runs, 'nmap_rss'):>10.0f}{python or 0:>8.0f}"
                f"{ratio_default:>11}{wall / median(tuned, 'wall'):>9.3f}"
                f"{misses:>8}{max(r.false_positives for r in runs):>7}{lost:>6}"
            )
            for run in runs:
                if run.label.startswith("Goalkeeper") and (
                    (run.misses and not run.lost_packets) or run.false_positives
                ):
                    failures.append(
                        f"{scenario} {size.hosts}: {run.label}: {run.misses} missed, "
                        f"{run.false_positives} false positives, {run.lost_packets} lost"
                    )
                if run.notes.get("mails", 0) != run.notes.get("mails_delivered", 0):
                    failures.append(
                        f"{scenario} {size.hosts}: {run.label}: only "
                        f"{run.notes['mails_delivered']} of {run.notes['mails']} mails delivered"
                    )
        if "Goalkeeper tick" in size.runs:
            tick = median(size.runs["Goalkeeper tick"], "wall")
            scan = median(size.runs["Goalkeeper scan"], "wall")
            outbox = median(size.runs[OUTBOX], "wall")
            print(
                f"  whole tick / scan stage: {tick / scan:.2f} with every mail delivered, "
                f"{outbox / scan:.2f} up to the outbox"
            )
    return failures


def main_inside(
    scenario: str, sizes: Sequence[int], repeats: int, slow: Sequence[int], json_dir: str | None
) -> int:
    """Entry point of the process run inside the namespace (or on loopback when not root)."""
    privileged = os.geteuid() == 0
    if privileged:
        load_scenario(scenario)
    results = [
        measure_size(
            hosts,
            scenario=scenario,
            repeats=repeats,
            slow_reference=scenario == "loopback" or hosts in slow,
            privileged=privileged,
        )
        for hosts in sizes
    ]
    failures = report(scenario, results)
    if json_dir:
        data = {
            size.hosts: {k: [asdict(r) for r in v] for k, v in size.runs.items()}
            for size in results
        }
        Path(json_dir, f"{scenario}.json").write_text(json.dumps(data), encoding="utf-8")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0
