"""The nmap scanner against real nmap and real listeners on 127.42.0.0/16 (this suite's range).

Each test uses its own 127.42.N.0/24 so tests never see each other's listeners. Raw-socket scans
and namespaces need root and skip elsewhere; the connect-scan path runs everywhere. A few tests
put a tiny script in nmap's place, to make nmap fail, hang or misbehave on demand.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterable
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from goalkeeper.config import ScanSettings
from goalkeeper.model import IPAddress, PortSpec, ScanResult, Transport
from goalkeeper.scanning.nmap import HOST_TIMEOUT_REASON, NmapScanner, ScannerSetupError
from goalkeeper_sim.listeners import PortListeners
from tests.netns import (
    NamespaceScan,
    NamespaceScenario,
    namespace_unavailable,
    network_namespace,
    scan_in_namespace,
)

TCP, UDP = Transport.TCP, Transport.UDP
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="SYN/UDP scans need raw sockets: run as root (CI does)"
)
FAST = "-Pn -n -T4 --max-retries 2 --host-timeout 60s"


def addr(text: str) -> IPv4Address:
    return IPv4Address(text)


def settings(**changes: object) -> ScanSettings:
    # The targets here are this host's loopback, which only tests and the demo may scan.
    return ScanSettings.model_validate({"nmap_arguments": FAST, "allow_loopback": True, **changes})


def opened(result: ScanResult) -> set[tuple[str, int, str]]:
    return {(str(p.address), p.port, str(p.protocol)) for p in result.open_ports}


async def scan(
    scan_settings: ScanSettings,
    addresses: Iterable[IPAddress],
    ports: Iterable[PortSpec],
    *,
    nmap_path: str = "nmap",
) -> ScanResult:
    async with NmapScanner(scan_settings, nmap_path=nmap_path) as scanner:
        return await scanner.scan(list(addresses), list(ports))


def script(path: Path, body: str) -> str:
    """An executable stand-in for nmap; it answers python-nmap's `nmap -V` like nmap 7.93."""
    path.write_text(
        "#!/bin/bash\n"
        'if [ "$1" = "-V" ]; then echo "Nmap version 7.93 ( https://nmap.org )"; exit 0; fi\n'
        + body
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def nmap_children() -> list[int]:
    """Live or unreaped nmap processes whose parent is this test process."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and name == "nmap":
            found.append(int(entry.name))
    return found


REDIS = PortSpec(6379, TCP, "redis")
MONGO = PortSpec(27017, TCP, "mongodb")
MYSQL = PortSpec(3306, TCP, "mysql")
DNS = PortSpec(53, UDP, "dns")
NTP = PortSpec(123, UDP, "ntp")
SNMP = PortSpec(161, UDP, "snmp")
MEMCACHED_UDP = PortSpec(11211, UDP, "memcached")


async def test_connect_scan_finds_exactly_the_open_tcp_ports_and_skips_udp() -> None:
    hosts = [addr(f"127.42.1.{n}") for n in (1, 2, 3)]
    listening = [(hosts[0], 6379, TCP), (hosts[1], 27017, TCP), (hosts[1], 53, UDP)]

    async with PortListeners(listening):
        with capture_logs() as logs:
            result = await scan(settings(privileged=False), hosts, [REDIS, MONGO, MYSQL, DNS])

    assert opened(result) == {("127.42.1.1", 6379, "tcp"), ("127.42.1.2", 27017, "tcp")}
    assert result.scanned == frozenset(hosts)
    assert result.not_scanned == {}
    assert (result.failed_batches, result.nmap_runs) == (0, 1)
    # nmap's port-table name is a guess: never evidence (verification says what answered).
    assert (result.open_ports[0].evidence, result.open_ports[0].grade) == ("", None)
    assert len(result.warnings) == 1
    assert "53/udp" in result.warnings[0]
    assert "privileged" in result.warnings[0]
    # The lifecycle is told too: a finding on 53/udp is not closed by this scan.
    assert result.skipped == {(53, UDP): "UDP not scanned (scan.privileged: false)"}
    events = {(e["event"], e["log_level"]) for e in logs}
    assert ("nmap.udp_skipped", "warning") in events
    assert ("nmap.scan", "info") in events


@pytest.mark.root
@needs_root
async def test_syn_and_udp_scan_reports_only_what_answers() -> None:
    one, two = addr("127.42.2.1"), addr("127.42.2.2")
    listening = [(one, 6379, TCP), (one, 161, UDP), (two, 11211, UDP)]

    async with PortListeners(listening):
        result = await scan(
            settings(privileged=True), [one, two], [REDIS, MYSQL, SNMP, NTP, MEMCACHED_UDP]
        )

    # 123/udp has no listener: loopback answers ICMP port-unreachable, so it is closed.
    assert opened(result) == {
        ("127.42.2.1", 6379, "tcp"),
        ("127.42.2.1", 161, "udp"),
        ("127.42.2.2", 11211, "udp"),
    }
    assert result.scanned == {one, two}
    assert result.warnings == ()
    assert result.skipped == {}
    udp = next(p for p in result.open_ports if p.port == 11211)
    assert udp.evidence == ""


@pytest.mark.root
@pytest.mark.skipif(namespace_unavailable() is not None, reason=str(namespace_unavailable()))
async def test_host_cut_off_by_host_timeout_is_not_scanned() -> None:
    # Inside a namespace of our own: 127.42.200.2 silently drops everything, so nmap's host
    # timeout (1 s, shorter than the 1.5 s it waits for any probe) always cuts it off.
    ruleset = (
        "table inet goalkeeper_test {\n chain input {\n"
        "  type filter hook input priority 0; policy accept;\n"
        "  ip daddr 127.42.200.2 drop\n"
        "  ip daddr 127.42.200.3 udp dport 5353 drop\n }\n}\n"
    )
    timeouts = "--max-retries 0 --host-timeout 1s --min-rtt-timeout 1500ms --max-rtt-timeout 2s"
    scenario = NamespaceScenario(
        nft_ruleset=ruleset,
        listeners=[("127.42.200.1", 6379, "tcp"), ("::1", 6379, "tcp")],
        scans=[
            NamespaceScan(
                addresses=["127.42.200.1", "127.42.200.2", "::1"],
                ports=[(6379, "tcp", "redis"), (3306, "tcp", "mysql")],
                scan={"privileged": True, "nmap_arguments": f"-Pn -n -T4 {timeouts}"},
            ),
            NamespaceScan(  # a silently dropped UDP port is open|filtered: never reported
                addresses=["127.42.200.3"],
                ports=[(5353, "udp", "mdns")],
                scan={"privileged": True, "nmap_arguments": "-Pn -n -T4 --max-retries 0"},
            ),
        ],
    )

    with network_namespace() as namespace:
        timed, silent = await scan_in_namespace(namespace, scenario)

    assert timed["not_scanned"] == {"127.42.200.2": HOST_TIMEOUT_REASON}
    assert timed["scanned"] == ["127.42.200.1", "::1"]
    assert [p[:3] for p in timed["open_ports"]] == [
        ["127.42.200.1", 6379, "tcp"],
        ["::1", 6379, "tcp"],
    ]
    assert timed["failed_batches"] == 0
    assert timed["nmap_runs"] == 2  # IPv4 and IPv6 are never in one batch
    assert silent["scanned"] == ["127.42.200.3"]
    assert silent["open_ports"] == []


# What nmap 7.93 writes: an open TCP port, an open and an open|filtered UDP port, a port nobody
# asked about, and a host cut off by --host-timeout (which python-nmap alone shows as clean).
RECORDED = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<nmaprun scanner="nmap" args="nmap -oX -" start="1" version="7.93" xmloutputversion="1.05">
<scaninfo type="syn" protocol="tcp" numservices="1" services="6379"/>
<scaninfo type="udp" protocol="udp" numservices="2" services="53,161"/>
<host starttime="1" endtime="1"><status state="up" reason="user-set" reason_ttl="0"/>
<address addr="127.42.3.1" addrtype="ipv4"/><hostnames></hostnames><ports>
<port protocol="tcp" portid="6379"><state state="open" reason="syn-ack" reason_ttl="64"/>\
<service name="redis" method="table" conf="3"/></port>
<port protocol="tcp" portid="8080"><state state="open" reason="syn-ack" reason_ttl="64"/></port>
<port protocol="udp" portid="53"><state state="open|filtered" reason="no-response" \
reason_ttl="0"/><service name="domain" method="table" conf="3"/></port>
<port protocol="udp" portid="161"><state state="open" reason="udp-response" reason_ttl="64"/>\
<service name="snmp" method="table" conf="3"/></port>
</ports></host>
<host starttime="1" endtime="6" timedout="true"><status state="up" reason="user-set" \
reason_ttl="0"/><address addr="127.42.3.2" addrtype="ipv4"/><hostnames></hostnames></host>
<runstats><finished time="6" timestr="" summary="" elapsed="5.03" exit="success"/>\
<hosts up="3" down="0" total="3"/></runstats>
</nmaprun>
"""
UNFINISHED = RECORDED.replace('exit="success"', 'exit="error" errormsg="boom"')
MISCOUNTED = RECORDED.replace('total="3"', 'total="7"')
BATCH = [addr("127.42.3.1"), addr("127.42.3.2"), addr("127.42.3.3")]
ASKED = [REDIS, DNS, SNMP]


async def test_recorded_output_is_read_honestly(tmp_path: Path) -> None:
    (tmp_path / "out.xml").write_text(RECORDED)
    fake = script(tmp_path / "nmap", f'cat "{tmp_path}/out.xml"\n')

    result = await scan(settings(privileged=IS_ROOT), BATCH, ASKED, nmap_path=fake)

    if IS_ROOT:
        assert opened(result) == {("127.42.3.1", 6379, "tcp"), ("127.42.3.1", 161, "udp")}
    else:  # a connect scan asks for no UDP, so it must not report any
        assert opened(result) == {("127.42.3.1", 6379, "tcp")}
    assert result.scanned == {BATCH[0], BATCH[2]}  # 127.42.3.3: absent under --open = clean
    assert result.not_scanned == {BATCH[1]: HOST_TIMEOUT_REASON}
    assert (result.failed_batches, result.nmap_runs) == (0, 1)


FAILURES = [
    pytest.param(
        'echo "nmap: simulated failure" >&2\nexit 1\n',
        "nmap failed: nmap: simulated failure",
        id="non-zero exit",
    ),
    pytest.param("kill -9 $$\n", "nmap was killed by SIGKILL", id="killed"),
    pytest.param("echo 'Starting Nmap'\n", "nmap's XML output is unreadable", id="not XML"),
    pytest.param(
        f"cat <<'EOF'\n{RECORDED.split('<runstats>')[0]}EOF\n",
        "nmap's XML output is unreadable",
        id="cut short",
    ),
    pytest.param(
        f"cat <<'EOF'\n{UNFINISHED}EOF\n",
        "nmap did not finish: boom",
        id="finished with error",
    ),
    pytest.param(
        f"cat <<'EOF'\n{MISCOUNTED}EOF\n",
        "nmap counted 7 targets of the",
        id="targets missing from nmap's count",
    ),
    pytest.param(
        f"cat <<'EOF'\n{RECORDED}EOF\n"
        "echo 'Omitting future Sendto error messages now that 10 have been shown.' >&2\n",
        "nmap failed: Omitting future Sendto error messages",
        id="error on stderr that names no host",
    ),
]


@pytest.mark.parametrize(("body", "reason"), FAILURES)
async def test_failed_batch_is_retried_once_then_not_scanned(
    tmp_path: Path, body: str, reason: str
) -> None:
    calls = tmp_path / "calls"
    fake = script(tmp_path / "nmap", f'echo "$*" >> "{calls}"\n{body}')

    result = await scan(settings(privileged=False, batch_size=2), BATCH, ASKED, nmap_path=fake)

    assert result.scanned == frozenset()
    assert result.open_ports == ()
    assert set(result.not_scanned) == set(BATCH)
    assert all(why.startswith(reason) for why in result.not_scanned.values())
    assert (result.failed_batches, result.nmap_runs) == (2, 4)
    assert len(calls.read_text().splitlines()) == 4


async def test_error_naming_one_host_makes_only_that_host_not_scanned(tmp_path: Path) -> None:
    line = "sendto in send_ip_packet_sd: sendto(4, packet, 44, 0, 127.42.3.3, 16) => Operation"
    fake = script(tmp_path / "nmap", f"cat <<'EOF'\n{RECORDED}EOF\necho '{line}' >&2\n")

    result = await scan(settings(privileged=False), BATCH, ASKED, nmap_path=fake)

    assert result.scanned == {BATCH[0]}
    assert result.not_scanned == {BATCH[1]: HOST_TIMEOUT_REASON, BATCH[2]: f"nmap error: {line}"}
    assert (result.failed_batches, result.nmap_runs) == (0, 1)


async def test_retry_that_succeeds_loses_nothing(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake = script(
        tmp_path / "nmap",
        f'echo x >> "{calls}"\n'
        f'if [ "$(wc -l < "{calls}")" -eq 1 ]; then echo "first run dies" >&2; exit 3; fi\n'
        'exec nmap "$@"\n',
    )
    host = addr("127.42.3.10")

    async with PortListeners([(host, 6379, TCP)]):
        result = await scan(settings(privileged=False), [host], [REDIS, MYSQL], nmap_path=fake)

    assert opened(result) == {("127.42.3.10", 6379, "tcp")}
    assert result.scanned == {host}
    assert (result.failed_batches, result.nmap_runs) == (0, 2)


async def test_cancelled_scan_leaves_no_nmap_running() -> None:
    probed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def first_probe(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not probed.done():
            probed.set_result(None)
        writer.close()

    host = "127.42.4.1"
    servers = [await asyncio.start_server(first_probe, host, port) for port in range(6000, 6040)]
    # The plan's rate ceiling (--max-rate) is what keeps nmap slow: it overrides any delay.
    slow = settings(
        privileged=False, nmap_arguments="-Pn -n --max-retries 0", max_rate=1, max_rate_per_subnet=1
    )
    ports = [PortSpec(port, TCP, "x") for port in range(6000, 6040)]  # 40 s at one probe a second

    async with NmapScanner(slow) as scanner:
        task = asyncio.create_task(scanner.scan([addr(host)], ports))
        await asyncio.wait_for(probed, timeout=30)  # nmap is running and probing
        running = nmap_children()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    for server in servers:
        server.close()
        await server.wait_closed()

    assert len(running) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(running[0], 0)
    assert nmap_children() == []


PORTS = [REDIS, MONGO, MYSQL, PortSpec(9200, TCP, "elasticsearch"), PortSpec(5432, TCP, "pg")]


@pytest.mark.parametrize(
    "privileged", [False, pytest.param(True, marks=[pytest.mark.root, needs_root])]
)
async def test_many_hosts_in_small_batches_every_open_port_found(privileged: bool) -> None:
    hosts = [addr(f"127.42.{third}.{n}") for third in (10, 11, 12, 13) for n in range(1, 25)]
    wanted = PORTS + ([SNMP, MEMCACHED_UDP] if privileged else [])
    listening = [
        (host, spec.port, spec.protocol)
        for index, host in enumerate(hosts)
        for offset, spec in enumerate(wanted)
        if (index + offset) % 3 == 0
    ]
    # 24 hosts a subnet in batches of 20: runs of 20 targets (on nmap's stdin) and of 4 (argv).
    tuning = {"batch_size": 20, "max_concurrent_scans": 2, "max_concurrent_per_subnet": 1}

    async with PortListeners(listening):
        result = await scan(settings(privileged=privileged, **tuning), hosts, wanted)

    assert opened(result) == {(str(a), p, str(t)) for a, p, t in listening}
    assert result.scanned == frozenset(hosts)
    assert (result.failed_batches, result.nmap_runs, result.not_scanned) == (0, 8, {})


async def test_concurrency_stays_within_both_limits(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    fake = script(
        tmp_path / "nmap",
        f'subnet=$(printf "%s\\n" "$@" | grep -m1 "^127\\.42\\." | cut -d. -f3)\n'
        f'echo "start $subnet" >> "{journal}"\nnmap "$@"\nrc=$?\n'
        f'echo "end $subnet" >> "{journal}"\nexit $rc\n',
    )
    hosts = [addr(f"127.42.{third}.{n}") for third in (20, 21, 22) for n in range(1, 7)]
    limits = {"batch_size": 2, "max_concurrent_scans": 2, "max_concurrent_per_subnet": 1}
    delayed = settings(privileged=False, nmap_arguments="-Pn -n --scan-delay 100ms", **limits)

    result = await scan(delayed, hosts, [REDIS, MYSQL], nmap_path=fake)

    running: dict[str, int] = {}
    peak_total = peak_subnet = 0
    for what, subnet in (line.split() for line in journal.read_text().splitlines()):
        running[subnet] = running.get(subnet, 0) + (1 if what == "start" else -1)
        peak_total = max(peak_total, sum(running.values()))
        peak_subnet = max(peak_subnet, *running.values())
    assert result.nmap_runs == 9
    assert result.scanned == frozenset(hosts)
    assert peak_total <= 2
    assert peak_subnet == 1


async def test_no_addresses_runs_no_nmap(tmp_path: Path) -> None:
    fake = script(tmp_path / "nmap", "exit 1\n")

    result = await scan(settings(privileged=False), [], [REDIS], nmap_path=fake)

    assert result == ScanResult(scanned=frozenset(), open_ports=())


async def test_only_udp_ports_without_privileges_scans_nothing_and_says_so(tmp_path: Path) -> None:
    fake = script(tmp_path / "nmap", "exit 1\n")

    result = await scan(settings(privileged=False), BATCH, [DNS, NTP], nmap_path=fake)

    assert result.scanned == frozenset()
    assert set(result.not_scanned) == set(BATCH)
    assert "UDP needs scan.privileged" in result.not_scanned[BATCH[0]]
    assert result.nmap_runs == 0
    assert "53/udp, 123/udp" in result.warnings[0]


def test_raw_scans_without_root_are_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    with pytest.raises(ScannerSetupError, match=r"root with NET_RAW .* uid 1000"):
        NmapScanner(settings(privileged=True))
    # An nmap given raw-socket capabilities by the operator is told so with --privileged.
    NmapScanner(settings(privileged=True, nmap_arguments=f"{FAST} --privileged"))
    NmapScanner(settings(privileged=False))


def test_missing_nmap_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ScannerSetupError, match="nmap not found"):
        NmapScanner(settings(privileged=False), nmap_path=str(tmp_path / "no-nmap"))


async def test_closed_scanner_refuses_to_scan() -> None:
    scanner = NmapScanner(settings(privileged=False))
    await scanner.aclose()

    with pytest.raises(RuntimeError, match="closed"):
        await scanner.scan([addr("127.42.3.1")], [REDIS])


async def test_listeners_answer_tcp_with_banner_and_udp_with_reply() -> None:
    host = addr("127.42.5.1")
    loop = asyncio.get_running_loop()

    async with PortListeners(
        [(host, 0, TCP), (host, 0, UDP)], tcp_banner=b"+OK\r\n", udp_reply=b"pong"
    ) as listeners:
        (_, tcp_port, _), (_, udp_port, _) = listeners.endpoints
        reader, writer = await asyncio.open_connection(str(host), tcp_port)
        banner = await reader.read()
        writer.close()
        await writer.wait_closed()
        answered: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, _: tuple[str | int, ...]) -> None:
                answered.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=(str(host), udp_port)
        )
        transport.sendto(b"ping")
        reply = await asyncio.wait_for(answered, timeout=10)
        transport.close()

    assert banner == b"+OK\r\n"
    assert reply == b"pong"
    assert tcp_port > 0
    assert udp_port > 0
    with pytest.raises(ConnectionRefusedError):  # closed on exit
        await asyncio.open_connection(str(host), tcp_port)


async def test_listeners_start_many_and_release_them() -> None:
    endpoints = [(addr(f"127.42.6.{n}"), 20000 + p, TCP) for n in range(1, 51) for p in range(40)]

    async with PortListeners(endpoints) as listeners:
        assert listeners.endpoints == tuple(endpoints)
    async with PortListeners(endpoints) as again:  # every port was released
        assert len(again.endpoints) == 2000


def test_listeners_refuse_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        PortListeners([(ip_address("192.0.2.1"), 6379, TCP)])


@pytest.mark.root
@needs_root
async def test_raw_runs_at_once_each_send_from_their_own_address_within_the_ceilings(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal"
    fake = script(
        tmp_path / "nmap",
        'source=$(printf "%s\\n" "$@" | grep -A1 -x -- -S | tail -1)\n'
        f'echo "start ${{source:-none}} $*" >> "{journal}"\nnmap "$@"\nrc=$?\n'
        f'echo "end ${{source:-none}}" >> "{journal}"\nexit $rc\n',
    )
    sources = ["127.42.40.1", "127.42.40.2"]
    hosts = [addr(f"127.42.{third}.{n}") for third in (41, 42, 43, 44, 45, 46) for n in range(1, 9)]
    listening = [(host, REDIS.port, TCP) for host in hosts[::3]]
    tuned = settings(
        privileged=True,
        source_addresses=sources,
        batch_size=16,  # two whole /24s of 8 hosts a run
        max_concurrent_scans=4,
        max_rate=4000,
        max_rate_per_subnet=3000,
    )

    async with PortListeners(listening):
        result = await scan(tuned, hosts, [REDIS, MYSQL], nmap_path=fake)

    assert opened(result) == {(str(a), p, str(t)) for a, p, t in listening}
    assert result.scanned == frozenset(hosts)
    assert result.nmap_runs == 3
    running: set[str] = set()
    overlapped = False
    for line in journal.read_text().splitlines():
        what, source, *argv = line.split()
        if what == "start":
            assert source in sources
            assert source not in running  # never two runs on one address at once
            running.add(source)
            overlapped = overlapped or len(running) > 1
            # two runs at once share max_rate (less the headroom for nmap's rate meter)
            assert " --max-rate 1940 --min-rate 1940 --randomize-hosts " in f" {' '.join(argv)} "
            assert " --min-hostgroup 16 --max-hostgroup 16 " in f" {' '.join(argv)} "
            assert argv[argv.index("-S") + 1 :][:3] == [source, "-e", "lo"]
        else:
            running.remove(source)
    assert overlapped


@pytest.mark.root
@needs_root
def test_raw_runs_without_source_addresses_go_one_at_a_time() -> None:
    scanner = NmapScanner(settings(privileged=True, max_concurrent_scans=4))

    assert (scanner.pace.runs, scanner.pace.max_rate) == (1, 5000)  # the per-subnet ceiling


def test_connect_runs_need_no_source_address_and_share_the_global_ceiling() -> None:
    scanner = NmapScanner(settings(privileged=False, max_concurrent_scans=4, max_rate=8000))

    assert (scanner.pace.runs, scanner.pace.max_rate) == (4, 2000)


async def test_a_scan_of_fewer_batches_than_runs_shares_the_ceilings_among_those(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal"
    fake = script(tmp_path / "nmap", f'echo "$*" >> "{journal}"\nexec nmap "$@"\n')
    hosts = [addr(f"127.42.47.{n}") for n in range(1, 9)]  # one /24: one batch
    scanner_settings = settings(privileged=False, max_concurrent_scans=4, max_rate=8000)
    async with PortListeners([(hosts[0], REDIS.port, TCP)]):
        result = await scan(scanner_settings, hosts, [REDIS], nmap_path=fake)

    assert opened(result) == {(str(hosts[0]), REDIS.port, "tcp")}
    (argv,) = [line for line in journal.read_text().splitlines() if "-oX" in line]
    # Alone, the run may use the whole global ceiling, up to the per-subnet one (5,000/s by
    # default, less the headroom for nmap's rate meter: 4,850); the configured pace would have
    # held it to a quarter of 8,000 for runs that never start.
    assert NmapScanner(scanner_settings).pace.max_rate == 2000
    assert " --max-rate 4850 --min-rate 4850 " in f" {argv} "


async def test_a_run_over_two_subnets_may_use_both_their_shares(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    fake = script(tmp_path / "nmap", f'echo "$*" >> "{journal}"\nexec nmap "$@"\n')
    hosts = [addr(f"127.42.{third}.{n}") for third in (48, 49) for n in range(1, 9)]
    scanner_settings = settings(privileged=False, max_concurrent_scans=4)  # 10,000 and 5,000/s
    async with PortListeners([(hosts[-1], REDIS.port, TCP)]):
        result = await scan(scanner_settings, hosts, [REDIS], nmap_path=fake)

    assert opened(result) == {(str(hosts[-1]), REDIS.port, "tcp")}
    (argv,) = [line for line in journal.read_text().splitlines() if "-oX" in line]
    # One run, its hosts shuffled over two /24s: each gets half of 9,700/s, under 5,000/s.
    assert " --max-rate 9700 --min-rate 9700 --randomize-hosts " in f" {argv} "
