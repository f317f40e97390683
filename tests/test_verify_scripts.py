"""The catalog's verification scripts are all in nmap's `safe` category (DESIGN §7), and real
nmap XML saved from runs against the real services grades as it should (tests/fixtures/verify,
made with `nmap -Pn -n -sT|-sU -sV --version-light --script ... -oX`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from goalkeeper.model import Grade, Transport
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper.scanning.grading import SCRIPT_RULES, grade_answer
from goalkeeper.scanning.verify import parse_answers

SCRIPT_DB = Path("/usr/share/nmap/scripts/script.db")
FIXTURES = Path(__file__).parent / "fixtures" / "verify"
FORBIDDEN = {"intrusive", "brute", "exploit", "dos"}
_ENTRY = re.compile(r'Entry \{ filename = "([^"]+)\.nse", categories = \{ ([^}]*)\} \}')


@pytest.mark.skipif(not SCRIPT_DB.exists(), reason=f"nmap's {SCRIPT_DB} is not installed")
def test_every_catalog_script_is_safe_and_nothing_worse() -> None:
    categories = {
        name: set(re.findall(r'"([a-z]+)"', listed))
        for name, listed in _ENTRY.findall(SCRIPT_DB.read_text())
    }
    scripts = {s for check in load_catalog().checks.values() for s in check.scripts}
    assert scripts, "the catalog names no verification script"
    problems = [
        f"{script}: not in script.db" if script not in categories
        else f"{script}: categories {sorted(categories[script])}"
        for script in sorted(scripts)
        if script not in categories
        or "safe" not in categories[script]
        or categories[script] & FORBIDDEN
    ]  # fmt: skip
    assert problems == []


def test_every_catalog_service_says_how_it_is_verified() -> None:
    catalog = load_catalog()
    assert set(catalog.checks) == set(catalog.advice)
    for check in catalog.checks.values():
        assert set(check.scripts) <= SCRIPT_RULES.keys()
        assert check.scripts or check.note


@pytest.mark.parametrize(
    ("fixture", "service", "address", "protocol", "grade", "evidence"),
    [
        ("redis", "redis", "127.0.14.1", "tcp", "unauthenticated",
         "Redis 7.0.15 answered `INFO` without a password"),
        ("redis", "redis", "127.0.14.2", "tcp", "reachable",
         "Redis answered, but would not run `INFO` without a password"),
        ("mc-tcp", "memcached", "127.0.14.3", "tcp", "unauthenticated",
         "Memcached 1.6.18 answered `stats` without a password"),
        ("mc-tcp", "memcached", "127.0.14.7", "tcp", "reachable",
         "Memcached answered: authentication required"),
        ("mc-udp", "memcached", "127.0.14.3", "udp", "unauthenticated",
         "Memcached answered `stats` without a password"),
        ("ftp", "ftp", "127.0.14.4", "tcp", "unauthenticated", "anonymous FTP login allowed"),
        ("ftp", "ftp", "127.0.14.5", "tcp", "reachable", "vsftpd 3.0.3 answered"),
        ("dns", "dns", "127.0.14.8", "udp", "unauthenticated",
         "DNS answered a recursive query for another domain"),
        ("dns", "dns", "127.0.14.9", "udp", "reachable", "dnsmasq 2.90 answered"),
        # rsync 3.2 greets with protocol 32, which nmap 7.93's rsync-list-modules cannot read.
        ("rsync", "rsync", "127.0.14.6", "tcp", "reachable", "rsync answered"),
    ],
)  # fmt: skip
def test_real_nmap_output_grades_as_the_service_answered(
    fixture: str, service: str, address: str, protocol: str, grade: str, evidence: str
) -> None:
    answers = parse_answers((FIXTURES / f"{fixture}.xml").read_bytes()).answers
    port = next(k[1] for k in answers if k[0] == address)
    answer = answers[(address, port, Transport(protocol))]
    verdict = grade_answer(load_catalog().check_for(service), Transport(protocol), answer)
    assert verdict is not None
    assert (verdict.grade, verdict.evidence) == (Grade(grade), evidence)


def test_raw_script_output_never_becomes_evidence() -> None:
    answers = parse_answers((FIXTURES / "redis.xml").read_bytes()).answers
    answer = answers[("127.0.14.1", 6379, Transport.TCP)]
    verdict = grade_answer(load_catalog().check_for("redis"), Transport.TCP, answer)
    assert verdict is not None
    # The script told the process id, the OS and the clients' addresses: none of it is shown.
    for private in ("Process ID", "Linux", "127.0.0.1", answer.scripts["redis-info"].output):
        assert private not in verdict.evidence


@pytest.mark.parametrize(
    ("protocol", "answer", "expected"),
    [
        (Transport.TCP, None, (Grade.UNCONFIRMED, "port open; no Redis reply")),
        (Transport.UDP, None, None),  # UDP without a protocol answer: no finding
    ],
)
def test_no_answer_is_unconfirmed_on_tcp_and_nothing_on_udp(
    protocol: Transport, answer: None, expected: tuple[Grade, str] | None
) -> None:
    verdict = grade_answer(load_catalog().check_for("redis"), protocol, answer)
    assert (None if verdict is None else (verdict.grade, verdict.evidence)) == expected


def test_unreadable_or_unfinished_xml_is_an_error() -> None:
    with pytest.raises(ValueError, match="unreadable"):
        parse_answers(b"<nmaprun><host>")
    with pytest.raises(ValueError, match="did not finish"):
        parse_answers(b"<nmaprun></nmaprun>")


def test_runs_group_open_pairs_by_port_and_keep_the_scan_rules() -> None:
    from ipaddress import ip_address

    from goalkeeper.config import ScanSettings
    from goalkeeper.model import OpenPort
    from goalkeeper.scanning.verify import plan_groups, verify_argv

    pairs = [OpenPort(ip_address(f"127.0.0.{n}"), 6379, Transport.TCP) for n in range(1, 6)]
    pairs.append(OpenPort(ip_address("127.0.0.9"), 53, Transport.UDP))
    pairs.append(OpenPort(ip_address("127.0.0.9"), 22, Transport.TCP))  # not on the list
    services = {(6379, Transport.TCP): "redis", (53, Transport.UDP): "dns"}
    groups = plan_groups(pairs, services, load_catalog(), batch_size=3)
    # One run per port covers many hosts; batch_size splits it; the unlisted pair is left out.
    assert [(g.port, len(g.addresses), g.scripts) for g in groups] == [
        (53, 1, ("dns-recursion",)),
        (6379, 3, ("redis-info",)),
        (6379, 2, ("redis-info",)),
    ]
    settings = ScanSettings.model_validate(
        {"nmap_arguments": "-T4 --host-timeout 10m --max-retries 1",
         "verify": {"script_timeout": 5, "host_timeout": 30}}
    )  # fmt: skip
    argv = verify_argv(groups[1], settings, max_rate=100)
    assert argv == [
        "nmap", "-T4", "--max-retries", "1", "-Pn", "-n", "-oX", "-", "-sT", "-sV",
        "--version-light", "-p", "T:6379", "--script", "redis-info", "--script-timeout", "5s",
        "--host-timeout", "30s", "--max-rate", "100",
    ]  # fmt: skip
    assert verify_argv(groups[0], settings, max_rate=100)[8] == "-sU"


def test_every_probe_waits_the_bounded_time() -> None:
    from goalkeeper.scanning.verify import bounded_probes

    text = "Probe TCP NULL q||\ntotalwaitms 6000\nmatch a m|x|\nProbe TCP GetRequest q|GET|\n"
    assert bounded_probes(text, wait_ms=2000) == (
        "Probe TCP NULL q||\ntotalwaitms 2000\nmatch a m|x|\n"
        "Probe TCP GetRequest q|GET|\ntotalwaitms 2000\n"
    )
