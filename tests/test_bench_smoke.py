"""The benchmark's correctness, small enough for CI: no time is ever asserted here.

`python -m benchmarks` runs at 256 hosts in both scenarios (as root, each in a namespace it
creates and deletes: closed ports answering RST, and closed ports silently dropped by nftables;
otherwise loopback only, with connect scans), and Goalkeeper's scan stage and whole tick must
find exactly the listeners that were opened. The mail benchmark's SMTP connection reuse is
checked against the real SMTP sink.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from benchmarks.mail_throughput import main as mail_main
from benchmarks.mail_throughput import rendered_mails
from benchmarks.netns import PREFIX
from goalkeeper.config import EmailSettings
from goalkeeper.notify.email import KeptConnection, SmtpMailer
from goalkeeper_sim.smtp import SmtpSink

REPOSITORY = Path(__file__).resolve().parent.parent
IS_ROOT = os.geteuid() == 0


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.startswith(PREFIX)}


def test_small_benchmark_finds_every_open_port_and_leaves_nothing_behind(tmp_path: Path) -> None:
    before = namespaces() if IS_ROOT else set()
    small = ["--sizes", "256", "--repeats", "1", "--slow-default", "--skip-mail"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *small, "--json", str(tmp_path)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    scenarios = ["loopback", "dropped"] if IS_ROOT else ["loopback"]
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(scenarios)
    for scenario in scenarios:
        runs = json.loads((tmp_path / f"{scenario}.json").read_text())["256"]
        for label in ("Goalkeeper scan", "Goalkeeper tick"):
            (run,) = runs[label]
            assert (run["misses"], run["false_positives"]) == (0, 0), (scenario, label)
            assert run["notes"]["scanned"] == 256
            assert run["notes"]["not_scanned"] == 0
            assert run["python_rss"] > 0
            assert run["nmap_rss"] > 0  # nmap really ran, and was seen running
        tick = runs["Goalkeeper tick"][0]["notes"]
        assert tick["mails"] > 0
        assert tick["mails_delivered"] == tick["mails"]
        assert "tuned nmap" in runs
        # The slow reference is left out of the dropped scenario unless asked for.
        assert ("default nmap" in runs) is (scenario == "loopback")
    if IS_ROOT:
        assert namespaces() == before


@pytest.mark.skipif(not IS_ROOT, reason="the rate benchmark needs a namespace and raw sockets")
def test_rate_benchmark_counts_every_probe_and_leaves_nothing_behind() -> None:
    before = namespaces()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.rate_budget", "--hosts", "512", "--ports", "4",
         "--repeats", "1"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr  # 1: a miss or a false positive
    rows = {line.split("  ")[0]: line.split() for line in done.stdout.splitlines()}
    for label in ("goalkeeper (defaults)", "plain nmap at 10000/s"):
        (row,) = [r for name, r in rows.items() if name.startswith(label)]
        # Every SYN seen by the packet socket: 512 hosts x 4 ports, once each.
        assert int(row[-6]) == 512 * 4, done.stdout  # the probes column
    assert namespaces() == before


def test_scan_process_benchmark_runs_the_real_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.scan_process", "--hosts", "64", "--repeats", "1"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    (median,) = [line.split() for line in done.stdout.splitlines() if line.startswith("median")]
    process, tick, added = (float(value.rstrip("s")) for value in median[1:])
    assert tick > 0 and process > tick and added == pytest.approx(process - tick, abs=0.011)


def test_mail_benchmark_delivers_every_mail_it_counts() -> None:
    root = logging.getLogger()
    handlers, config = root.handlers[:], structlog.get_config()
    assert mail_main(["--owners", "12", "--per-mail-sample", "3"]) == 0
    # main() logs into a file it closes: nothing of that may outlive it in this process.
    assert (root.handlers, structlog.get_config()) == (handlers, config)


async def test_reused_connection_carries_mails_until_its_cap_and_survives_a_server_hangup() -> None:
    mails = rendered_mails(7)
    async with SmtpSink() as sink:
        settings = EmailSettings(host=sink.host, port=sink.port, starttls=False, timeout=5)
        mailer = SmtpMailer(settings, kept=KeptConnection(max_mails=3))
        with capture_logs() as logs:
            for mail in mails[:5]:
                await mailer.send(mail)
            sink.fail_next(421, stage="RCPT")  # the server ends the kept session
            for mail in mails[5:]:
                await mailer.send(mail)
            await mailer.aclose()

    sent = [e for e in logs if e["event"] == "mail.sent"]
    # Three mails a connection, then a new one; the hang-up costs a reconnect, not an attempt.
    assert [e["reused_connection"] for e in sent] == [False, True, True, False, True, False, True]
    assert [e["attempt"] for e in sent] == [1] * 7
    assert [e["event"] for e in logs if e["event"] != "mail.sent"] == ["mail.reconnect"]
    assert [m.rcpt_tos[0] for m in sink.messages] == [m.recipient for m in mails]


async def test_one_connection_per_mail_unless_reuse_is_asked_for() -> None:
    mails = rendered_mails(3)
    async with SmtpSink() as sink:
        settings = EmailSettings(host=sink.host, port=sink.port, starttls=False, timeout=5)
        mailer = SmtpMailer(settings)
        with capture_logs() as logs:
            for mail in mails:
                await mailer.send(mail)

    assert [e["reused_connection"] for e in logs if e["event"] == "mail.sent"] == [False] * 3
    assert len(sink.messages) == 3


def test_rendered_bench_mails_are_one_per_owner() -> None:
    mails = rendered_mails(5)

    assert len({m.recipient for m in mails}) == 5
    assert all(m.sender.endswith("<security@provider.example>") for m in mails)


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="the IPv6 benchmark scans inside a namespace: needs root")
def test_ipv6_benchmark_finds_every_listener_with_both_and_leaves_nothing_behind() -> None:
    before = namespaces()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ipv6_scan", "--hosts", "16", "--repeats", "1"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr  # 1: Goalkeeper missed a listener
    found = [line for line in done.stdout.splitlines() if "open ports found" in line]
    # 16 hosts, one listener on every seventh (hosts 1, 8 and 15): both runs find all three.
    assert len(found) == 2 and all(line.endswith("open ports found: 3") for line in found)
    assert namespaces() == before
