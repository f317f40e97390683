"""Verification through real nmap against the real services Debian ships (DESIGN §7).

Each service runs twice on this suite's 127.77.0.0/24, open and locked: redis-server without and
with requirepass, memcached without and with its ASCII authentication (TCP and UDP), vsftpd
with anonymous login on and off, dnsmasq with recursion on (forwarding to a third dnsmasq on
loopback) and off. Both phases run: the port scan, then verification; the grades must differ.
A test skips, saying which, only when a service's binary is absent.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from goalkeeper.config import ScanSettings
from goalkeeper.model import Grade, OpenPort, PortSpec, ScanResult, Transport
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.scanning.nmap import NmapScanner
from goalkeeper.scanning.verify import VerifyingScanner

TCP, UDP = Transport.TCP, Transport.UDP
NET = "127.77.0."
BINARIES = ("redis-server", "memcached", "vsftpd", "dnsmasq", "nmap")
MISSING = [name for name in BINARIES if shutil.which(name) is None]
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="UDP verification needs raw sockets (root)"),
]
PORTS = [
    PortSpec(6379, TCP, "redis"),
    PortSpec(11211, TCP, "memcached"),
    PortSpec(11211, UDP, "memcached"),
    PortSpec(21, TCP, "ftp"),
    PortSpec(53, UDP, "dns"),
]


def _vsftpd(path: Path, address: str, *, anonymous: bool) -> list[str]:
    (path / "empty").mkdir(exist_ok=True)
    (path / "ftp").mkdir(exist_ok=True)
    conf = path / f"vsftpd-{address}.conf"
    conf.write_text(
        f"listen=YES\nlisten_address={address}\nlisten_port=21\nbackground=NO\n"
        f"anonymous_enable={'YES' if anonymous else 'NO'}\nlocal_enable=YES\nwrite_enable=NO\n"
        f"anon_root={path / 'ftp'}\nno_anon_password=YES\nsecure_chroot_dir={path / 'empty'}\n"
        "run_as_launching_user=YES\nseccomp_sandbox=NO\n"
    )
    return ["vsftpd", str(conf)]


def _dnsmasq(path: Path, address: str, *extra: str) -> list[str]:
    return ["dnsmasq", "--keep-in-foreground", "--user=root", "--pid-file=", "--no-hosts",
            "--no-resolv", "--bind-interfaces", f"--listen-address={address}", "--port=53",
            *extra]  # fmt: skip


def _ready(address: str, port: int, protocol: Transport, process: subprocess.Popen[bytes]) -> None:
    """Until the service answers (or its process died): a TCP connect, or a DNS query. A
    daemon started elsewhere says nothing when it is ready: asking it is the only way."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        kind = socket.SOCK_STREAM if protocol is TCP else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.settimeout(0.05)
            try:
                probe.connect((address, port))
                if protocol is UDP:  # a DNS query for "." (type NS): any answer will do
                    probe.send(
                        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01"
                    )
                    probe.recv(512)
                return
            except OSError:
                time.sleep(0.02)  # its process is still starting: nothing to await
    raise RuntimeError(f"{address}:{port} never answered")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    path = tmp_path_factory.mktemp("services")
    (path / "memcached.auth").write_text("user:not-a-real-password\n")
    started: list[subprocess.Popen[bytes]] = []
    plan = [
        (["redis-server", "--bind", f"{NET}1", "--port", "6379", "--save", "", "--protected-mode",
          "no"], f"{NET}1", 6379, TCP),
        (["redis-server", "--bind", f"{NET}2", "--port", "6379", "--save", "", "--requirepass",
          "not-a-real-password"], f"{NET}2", 6379, TCP),
        (["memcached", "-l", f"{NET}3", "-p", "11211", "-U", "11211", "-u", "root"], f"{NET}3",
         11211, TCP),
        (["memcached", "-l", f"{NET}4", "-p", "11211", "-U", "0", "-u", "root", "-Y",
          str(path / "memcached.auth")], f"{NET}4", 11211, TCP),
        (_vsftpd(path, f"{NET}5", anonymous=True), f"{NET}5", 21, TCP),
        (_vsftpd(path, f"{NET}6", anonymous=False), f"{NET}6", 21, TCP),
        (_dnsmasq(path, f"{NET}9", "--address=/#/127.0.99.1"), f"{NET}9", 53, UDP),
        (_dnsmasq(path, f"{NET}7", f"--server={NET}9"), f"{NET}7", 53, UDP),
        (_dnsmasq(path, f"{NET}8", "--local=/example.test/"), f"{NET}8", 53, UDP),
    ]  # fmt: skip
    try:
        for argv, address, port, protocol in plan:
            binary = shutil.which(argv[0])  # vsftpd and dnsmasq live in /usr/sbin
            assert binary is not None
            process = subprocess.Popen(
                [binary, *argv[1:]],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": os.defpath},
            )
            started.append(process)
            _ready(address, port, protocol, process)
        yield
    finally:
        for process in started:
            process.kill()
            process.wait()


def graded(result: ScanResult) -> dict[tuple[str, int, str], tuple[Grade | None, str]]:
    return {
        (str(p.address), p.port, str(p.protocol)): (p.grade, p.evidence) for p in result.open_ports
    }


@pytest.mark.root
@pytest.mark.usefixtures("services")
def test_each_real_service_is_graded_by_what_it_answered() -> None:
    settings = ScanSettings.model_validate(
        {"nmap_arguments": "-Pn -n -T4 --max-retries 2", "allow_loopback": True,
         "verify": {"script_timeout": 20, "host_timeout": 120}}
    )  # fmt: skip
    addresses = [IPv4Address(f"{NET}{n}") for n in range(1, 9)]

    async def scan() -> tuple[ScanResult, dict[str, float]]:
        async with VerifyingScanner(NmapScanner(settings), settings, load_catalog()) as scanner:
            return await scanner.scan(addresses, PORTS), scanner.timings

    result, timings = asyncio.run(scan())
    found = graded(result)
    U, R = Grade.UNAUTHENTICATED, Grade.REACHABLE
    assert found[(f"{NET}1", 6379, "tcp")] == (U, "Redis 7.0.15 answered `INFO` without a password")
    assert found[(f"{NET}2", 6379, "tcp")] == (
        R, "Redis answered, but would not run `INFO` without a password"
    )  # fmt: skip
    assert found[(f"{NET}3", 11211, "tcp")][0] is U
    assert found[(f"{NET}3", 11211, "udp")][0] is U
    assert found[(f"{NET}4", 11211, "tcp")] == (R, "Memcached answered: authentication required")
    assert (f"{NET}4", 11211, "udp") not in found  # UDP off there: nothing answered, no finding
    assert found[(f"{NET}5", 21, "tcp")] == (U, "anonymous FTP login allowed")
    assert found[(f"{NET}6", 21, "tcp")][0] is R
    assert found[(f"{NET}7", 53, "udp")] == (U, "DNS answered a recursive query for another domain")
    assert found[(f"{NET}8", 53, "udp")][0] is R
    assert {"scan", "verify", "verify:redis", "verify:dns"} <= timings.keys()


def test_a_verification_that_fails_keeps_the_finding_reachable(tmp_path: Path) -> None:
    fake = tmp_path / "nmap"
    fake.write_text("#!/bin/sh\necho 'nmap: something broke' >&2\nexit 1\n")
    fake.chmod(0o755)
    settings = ScanSettings.model_validate({"allow_loopback": True, "privileged": False})
    pair = OpenPort(IPv4Address(f"{NET}200"), 6379, TCP)
    result = ScanResult(scanned=frozenset({pair.address}), open_ports=(pair,))

    async def verify() -> ScanResult:
        verifier = VerifyingScanner(
            NmapScanner(settings), settings, load_catalog(), nmap_path=str(fake)
        )
        async with verifier:
            return await verifier.verify(result, PORTS)

    (kept,) = asyncio.run(verify()).open_ports
    assert kept.grade is Grade.REACHABLE
    assert (
        kept.evidence
        == "port open; the Redis check did not finish (nmap failed: nmap: something broke)"
    )
