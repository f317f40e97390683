"""Nothing leaves scope: `goalkeeper scan` (the real CLI, real nmap) inside a network namespace of
its own, with nftables counting every probe the namespace sends.

The namespace has only its loopback, holding the target's address, and the default routes point
at it: a probe to any address
at all passes the output hook and is counted, then comes back in on lo and is dropped there (a
new namespace forwards nothing), so nothing ever reaches another network. A probe is what starts a
conversation (a TCP SYN, any UDP datagram such as a DNS query, an ICMP echo request); replies
on loopback are not probes. Hostile nmap_arguments and networks are refused at config time
(exit 2, naming the token) and send nothing; accepted configurations send probes only to the
targets in scope: never to an excluded address, an IPv4-mapped form of one, or to 127.0.0.1,
where the kernel sends 0.0.0.0.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.netns import REPOSITORY, namespace_unavailable, network_namespace

pytestmark = pytest.mark.skipif(
    namespace_unavailable() is not None, reason=namespace_unavailable() or ""
)

TARGET = "192.0.2.5"  # the one address in scope: the namespace's own, on its lo
EXCLUDED = "192.0.2.9"
RULESET = f"""
table inet gk_scope {{
    counter to_target {{}}
    counter elsewhere {{}}
    chain output {{
        type filter hook output priority 0; policy accept;
        tcp flags & (syn | ack) == syn jump probe
        meta l4proto udp jump probe
        icmp type echo-request jump probe
        icmpv6 type echo-request jump probe
    }}
    chain probe {{
        ip daddr {TARGET} counter name to_target return
        counter name elsewhere
    }}
}}
"""
SETUP = [
    ["ip", "link", "set", "lo", "up"],
    ["ip", "addr", "add", f"{TARGET}/32", "dev", "lo"],
    ["ip", "route", "add", "default", "dev", "lo"],
    ["ip", "-6", "route", "add", "default", "dev", "lo"],
]
INVENTORY = [TARGET, EXCLUDED, f"::ffff:{EXCLUDED}", "0.0.0.0", "127.0.0.1"]


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    with network_namespace() as name:
        for command in SETUP:
            subprocess.run(["ip", "netns", "exec", name, *command], check=True)
        subprocess.run(
            ["ip", "netns", "exec", name, "nft", "-f", "-"], input=RULESET, text=True, check=True
        )
        yield name


def counted(namespace: str) -> dict[str, int]:
    """The probe counters since the last call (reading them resets them)."""
    listing = subprocess.run(
        ["ip", "netns", "exec", namespace, "nft", "-j", "reset", "counters", "table", "inet",
         "gk_scope"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = {}
    for item in json.loads(listing.stdout)["nftables"]:
        if "counter" in item:
            found[item["counter"]["name"]] = item["counter"]["packets"]
    return found


def write_config(tmp: Path, scan: dict[str, Any], targets: list[str]) -> Path:
    (tmp / "inventory.yaml").write_text(
        yaml.safe_dump({"targets": [{"address": a, "server_name": f"srv-{a}"} for a in targets]})
    )
    settings = {
        "environment": "stage",
        "scan": {
            "ports": [{"port": 6379, "service": "redis"}, {"port": 53, "service": "dns"}],
            "privileged": False,
            **scan,
        },
        "inventory": {"source": "static", "static_file": "inventory.yaml"},
        "logging": {"format": "json"},
        "state": {"url": f"sqlite+aiosqlite:///{tmp / 'state.db'}"},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


async def goalkeeper_scan(namespace: str, config: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace,
        sys.executable, "-m", "goalkeeper", "--config", str(config), "scan", "--dry-run", "--json",
        cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_the_counters_see_a_probe_sent_out_of_scope(namespace: str) -> None:
    """The harness itself: plain nmap at 0.0.0.0 (which the kernel sends to 127.0.0.1) is
    counted. Without this, zero below could mean "not looked"."""
    counted(namespace)
    subprocess.run(
        ["ip", "netns", "exec", namespace, "nmap", "-Pn", "-n", "-sT", "-p", "6379", "0.0.0.0"],
        capture_output=True, check=True,
    )  # fmt: skip
    assert counted(namespace)["elsewhere"] >= 1


@pytest.mark.parametrize(
    ("scan", "token"),
    [
        ({"nmap_arguments": "-Pn -n 10.66.66.66"}, "'10.66.66.66'"),
        ({"nmap_arguments": "-Pn -n --iR 5"}, "'--iR'"),
        ({"nmap_arguments": "-Pn -n -iL=/etc/hosts"}, "'-iL=/etc/hosts'"),
        ({"nmap_arguments": "-Pn -n --iL /etc/hosts"}, "'--iL'"),
        ({"nmap_arguments": "-Pn -n -R"}, "'-R'"),
        ({"nmap_arguments": '-Pn "-n'}, "close the quote"),
        ({"allowed_networks": ["::ffff:192.0.2.0/120"]}, "IPv4-mapped"),
        ({"allowed_networks": ["0.0.0.0/32"]}, "0.0.0.0/32"),
        ({"allowed_networks": ["0.0.0.0/0"]}, "scan.allow_whole_internet"),
    ],
)
async def test_hostile_configuration_exits_2_naming_it_and_sends_nothing(
    namespace: str, tmp_path: Path, scan: dict[str, Any], token: str
) -> None:
    scan = {"allowed_networks": ["192.0.2.0/24"], **scan}
    config = write_config(tmp_path, scan, [TARGET])
    counted(namespace)
    code, out, err = await goalkeeper_scan(namespace, config)
    assert code == 2, (out, err)
    assert token in err
    assert counted(namespace) == {"to_target": 0, "elsewhere": 0}


WHOLE_INTERNET = {"allowed_networks": ["0.0.0.0/0", "::/0"], "allow_whole_internet": True}


@pytest.mark.parametrize(
    "scan",
    [
        # Every inventory address is "allowed", and still the excluded address's mapped form,
        # 0.0.0.0 and 127.0.0.1 (loopback, without scan.allow_loopback) are not scanned.
        {**WHOLE_INTERNET, "exclude": [EXCLUDED]},
        {**WHOLE_INTERNET, "exclude": [EXCLUDED], "privileged": True},  # raw SYN probes
        # No -n written: the scanner adds it, so no reverse DNS query leaves.
        {**WHOLE_INTERNET, "exclude": [EXCLUDED], "nmap_arguments": "-T4 --max-retries 1"},
    ],
    ids=["connect", "raw", "no-minus-n"],
)
async def test_accepted_configuration_probes_only_its_targets(
    namespace: str, tmp_path: Path, scan: dict[str, Any]
) -> None:
    config = write_config(tmp_path, scan, INVENTORY)
    counted(namespace)
    code, out, err = await goalkeeper_scan(namespace, config)
    probes = counted(namespace)
    assert code == 0, (out, err)
    assert probes["elsewhere"] == 0, probes
    report = json.loads(out)
    assert (report["hosts_scanned"], report["excluded"]) == (1, 1)
    refused = {ip_address(a) for a in report["refused"]}
    assert refused == {ip_address(a) for a in ("0.0.0.0", "127.0.0.1", f"::ffff:{EXCLUDED}")}
    assert probes["to_target"] >= 2  # both ports of the one target in scope: the counters work
