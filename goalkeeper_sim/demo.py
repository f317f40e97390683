"""`goalkeeper demo`: the real tick against a simulated cloud on loopback, then what happened.

Starts the simulated OpenStack and Fleio, listeners playing the servers' open ports on
127.x.y.z addresses, an SMTP sink that writes .eml files and a fake Telegram; runs one tick with
`inventory.source: openstack` through the same code as `goalkeeper scan`; prints the findings,
which customer got which mail, and the Telegram summary; stops everything it started. Nothing
leaves the machine: every address scanned is in 127.0.0.0/8. The simulated cloud is dual-stack
on its public-direct network (fd00:64::/64): those IPv6 targets are in scope but in scan.exclude,
because an fd00:: address is reachable only inside a network namespace (tests/test_ipv6_netns.py
scans IPv6 there for real), and the demo says so.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from goalkeeper import config
from goalkeeper.config import Settings
from goalkeeper.model import TickReport
from goalkeeper.progress import SILENT, Progress, terminal_bar
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.wiring import one_tick
from goalkeeper_sim.cloud import SIM_CLOUD_NAME, SimulatedCloud
from goalkeeper_sim.regions import (
    SECOND_ADDRESS_BASE,
    SECOND_IPV6_BASE,
    SECOND_REGION,
    regional_world,
)
from goalkeeper_sim.smtp import SmtpSink
from goalkeeper_sim.telegram import FakeTelegram
from goalkeeper_sim.world import DEFAULT_ADDRESS_BASE, DEFAULT_IPV6_BASE, World, build_world

OPS = "security@provider.example"
IPV6_NOTE = (
    "IPv6 targets in scope but excluded here ({count}, {base}): an fd00:: address is reachable "
    "only inside a network namespace, so the demo plans them and skips them (scan.exclude); "
    "tests/test_ipv6_netns.py scans IPv6 for real."
)


async def run_demo(
    out_dir: Path, *, seed: int = 1, projects: int = 10, servers_per_project: int = 6,
    out: TextIO = sys.stdout,
) -> TickReport:  # fmt: skip
    _fresh_directory(out_dir / "mail")
    root = os.geteuid() == 0
    services = [
        p for p in load_catalog().ports
        # Without root: no UDP scan, and no listener below port 1024.
        if p.service in _DEMO_SERVICES and (root or (p.port >= 1024 and p.protocol == "tcp"))
    ]  # fmt: skip
    world = build_world(
        seed,
        projects=projects,
        servers_per_project=servers_per_project,
        unknown_project_share=0.2,
        services=services,
    )
    # A second region (its own Nova and Neutron, the same Keystone and customers): one run reads
    # both, and a customer with servers in both gets one report naming each server's region.
    second = regional_world(world, seed=seed + 1, servers_per_project=2, services=services)
    regions = {"inventory": {"openstack": {"regions": ["RegionOne", SECOND_REGION]}},
               "scan": {"allowed_networks": [DEFAULT_ADDRESS_BASE, SECOND_ADDRESS_BASE,
                                             DEFAULT_IPV6_BASE, SECOND_IPV6_BASE],
                        "exclude": [DEFAULT_IPV6_BASE, SECOND_IPV6_BASE]}}  # fmt: skip
    with terminal_bar(sys.stderr) as bar:
        tick = await sim_tick(
            world, out_dir, privileged=root, host_timeout="60s", mail_dir=out_dir / "mail",
            progress=bar, regions={SECOND_REGION: second}, overrides=regions,
        )  # fmt: skip
    print_demo(tick.report, tick.smtp, tick.telegram,
               world_size=(len(world.projects), len(world.servers) + len(second.servers)),
               out=out)  # fmt: skip
    ipv6 = len(world.public_ipv6_addresses()) + len(second.public_ipv6_addresses())
    if ipv6:
        bases = f"{DEFAULT_IPV6_BASE}, {SECOND_IPV6_BASE}"
        print("\n" + IPV6_NOTE.format(count=ipv6, base=bases), file=out)
    return tick.report


@dataclass(frozen=True, slots=True)
class SimTick:
    """One real tick's report and what the simulated SMTP server and Telegram received."""

    report: TickReport
    smtp: SmtpSink
    telegram: FakeTelegram


async def sim_tick(  # noqa: PLR0913 (each keyword is one knob of the simulated tick)
    world: World,
    directory: Path,
    *,
    privileged: bool = False,
    host_timeout: str = "30s",
    mail_dir: Path | None = None,
    now: datetime | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress = SILENT,
    regions: dict[str, World] | None = None,
) -> SimTick:
    """Serve `world` on loopback and run one real tick against it (the demo's and the tests'
    end-to-end tick); the state store, clouds.yaml and config are written under `directory`, so
    ticks in the same directory follow each other. `now` is the tick's time (a fake clock);
    `overrides` are merged, section by section, into the settings (`{"exceptions": [...]}`);
    `regions` are further regions' worlds (goalkeeper_sim.regions), served beside `world`'s."""
    async with (
        SimulatedCloud(world, regions=regions) as cloud,
        SmtpSink(directory=mail_dir) as smtp,
        FakeTelegram() as telegram,
    ):
        clouds_yaml = cloud.write_clouds_yaml(directory / "clouds.yaml")
        settings = sim_settings(
            cloud, smtp, telegram, state=directory / "state.db", privileged=privileged,
            host_timeout=host_timeout, overrides=overrides or {},
        )  # fmt: skip
        config_path = _write_config(settings, directory / "config.yaml")
        with _environment(OS_CLIENT_CONFIG_FILE=str(clouds_yaml)):
            report = await one_tick(settings, config_path, now=now, progress=progress)
    return SimTick(report, smtp, telegram)


def sim_settings(
    cloud: SimulatedCloud,
    smtp: SmtpSink,
    telegram: FakeTelegram,
    *,
    state: Path,
    privileged: bool,
    host_timeout: str,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings that point the real code at the simulated cloud: prod, mail to customers on."""
    return Settings.model_validate(
        _merged(
            {
                "environment": "prod",
                "scan": {
                    "allowed_networks": [DEFAULT_ADDRESS_BASE, DEFAULT_IPV6_BASE],
                    # Reachable only inside a network namespace: planned, and skipped on purpose.
                    "exclude": [DEFAULT_IPV6_BASE],
                    "allow_loopback": True,  # the simulated cloud lives on loopback
                    "privileged": privileged,
                    "nmap_arguments": f"-Pn -n -T4 --max-retries 1 --host-timeout {host_timeout}",
                },
                "inventory": {
                    "source": "openstack",
                    "openstack": {"cloud": SIM_CLOUD_NAME, "api_timeout": 30},
                    "fleio": {"url": cloud.fleio_url, "token": cloud.fleio_token},
                },
                "notify": {
                    "send_to_customers": True,
                    "ops_email": OPS,
                    "sender": f"Goalkeeper <{OPS}>",
                    # The footer every mail carries (notify.scanner_info): who scans, from where.
                    "scanner_info": {
                        "addresses": ["127.0.0.1"],
                        "info_url": "https://provider.example/security-scan",
                        "contact": OPS,
                    },
                    "email": {"host": smtp.host, "port": smtp.port, "starttls": False},
                    "telegram": {
                        "enabled": True,
                        "token": telegram.token,
                        "chat_id": "-1001000000001",
                        "api_base": telegram.url,
                    },
                },
                "state": {"url": f"sqlite+aiosqlite:///{state}"},
            },
            overrides or {},
        )
    )


def _merged(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


_DEMO_SERVICES = {"redis", "mongodb", "mysql", "elasticsearch", "memcached", "telnet", "docker"}


def print_demo(
    report: TickReport,
    smtp: SmtpSink,
    telegram: FakeTelegram,
    *,
    world_size: tuple[int, int],
    out: TextIO,
) -> None:
    projects, servers = world_size
    print(f"Simulated cloud: {projects} projects, {servers} servers (all on 127.x.y.z).", file=out)
    print(
        f"Tick {report.run_id}: {report.targets} public addresses, {report.hosts_scanned} scanned, "
        f"{len(report.not_scanned)} not scanned, {len(report.findings)} open dangerous ports, "
        f"{report.duration_seconds:.1f} s.\n",
        file=out,
    )
    print(f"{'address':<15} {'port':>9}  {'service':<14} {'region':<10} {'server':<22} owner",
          file=out)  # fmt: skip
    for f in report.findings:
        owner = f.owner.email or f"NOT FOUND ({f.target.project_name or f.target.project_id})"
        port = f"{f.port}/{f.protocol}"
        print(
            f"{f.address!s:<15} {port:>9}  {f.service:<14} {f.target.region or '-':<10} "
            f"{f.target.server_name[:22]:<22} {owner}",
            file=out,
        )
    print("\nMails (SMTP sink):", file=out)
    for mail in smtp.messages:
        print(f"  to {', '.join(mail.rcpt_tos)}: {mail.message['Subject']}", file=out)
        print(f"      {mail.path}", file=out)
    failed = [m for m in report.mails if not m.delivered]
    for m in failed:
        print(f"  NOT DELIVERED to {m.recipient}: {m.error}", file=out)
    print(f"\nTelegram summary ({len(telegram.messages)} message(s)):", file=out)
    for message in telegram.messages:
        print(message.plain, file=out)


def _fresh_directory(mail_dir: Path) -> None:
    shutil.rmtree(mail_dir.parent, ignore_errors=True)
    mail_dir.mkdir(parents=True)


def _write_config(settings: Settings, path: Path) -> Path:
    """The demo's effective config, secrets left out, for the curious to read."""
    data = config.redacted(settings)
    data["inventory"]["fleio"]["token"] = None
    data["notify"]["telegram"]["token"] = None
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
