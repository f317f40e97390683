"""`goalkeeper demo`: the real tick against the simulated cloud, mails written as .eml files."""

from __future__ import annotations

import email
import email.policy
import io
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from goalkeeper_sim.demo import run_demo


async def test_demo_runs_a_real_tick_and_shows_where_everything_went(tmp_path: Path) -> None:
    out = io.StringIO()
    with capture_logs() as logged:
        report = await run_demo(tmp_path / "demo", out=out)
    text = out.getvalue()
    assert report.targets >= 40
    assert report.hosts_scanned == report.targets
    # OpenStack's addresses are scanned while Nova, Keystone and Fleio are still being read.
    (started,) = [line for line in logged if line["event"] == "scan started"]
    assert started["inventory"] == "still being read"
    # The first region to answer Neutron is scanned at once, the other once it is read too.
    assert started["hosts"] in report.targets_by_region.values()
    assert any(line["event"] == "scanning targets the early addresses lacked" for line in logged)
    assert report.findings, "the simulated world leaves ports open"
    assert report.owners_not_found, "seed 1 has a project billing does not know"
    # Through Fleio's nested shapes (service.client is an object), customers get their mail.
    customers = [m for m in report.mails if m.intended is not None]
    assert customers
    assert all(m.recipient == m.intended for m in customers)
    assert report.owner_lookup is not None
    assert not report.owner_lookup.incident
    assert "Owner lookup incident" not in text
    assert all(mail.delivered for mail in report.mails)
    files = sorted((tmp_path / "demo" / "mail").glob("*.eml"))
    assert len(files) == len(report.mails)
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert str(path) in text
        assert message["Subject"] in text
    assert "OWNER NOT FOUND" in text
    assert "Telegram summary (1 message(s))" in text
    assert report.summary_delivered is True
    # The simulated cloud is dual-stack on its public-direct network: its IPv6 targets are in
    # scope, and skipped on purpose (unreachable outside a namespace), with the reason printed.
    assert report.excluded >= 1
    assert report.not_scanned == {}
    assert report.refused == ()
    assert f"IPv6 targets in scope but excluded here ({report.excluded}, fd00:64::/64" in text
    # Two regions in one run: every target carries its region, and the summary counts them.
    assert set(report.targets_by_region) == {"RegionOne", "RegionTwo"}
    assert report.regions_down == {}
    assert "By region: RegionOne " in text


def test_the_simulator_never_loads_into_the_daemons_process() -> None:
    code = (
        "import sys, goalkeeper.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('goalkeeper_sim', 'aiosmtpd'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def demo_command(*argv: str, block: str | None = None) -> subprocess.CompletedProcess[str]:
    """`goalkeeper demo` in a fresh process; `block` makes a package unimportable there, as in an
    install without the `sim` extra (None in sys.modules is the import system's "not here")."""
    blocking = f"sys.modules[{block!r}] = None; " if block else ""
    code = f"import sys; {blocking}from goalkeeper.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "demo", *argv],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_demo_command_loads_the_simulator_in_the_dev_install(tmp_path: Path) -> None:
    result = demo_command("--out", str(tmp_path / "demo"), "--projects", "2")
    assert result.returncode == 0, result.stderr
    assert "Simulated cloud: 2 projects" in result.stdout
    assert "Telegram summary (1 message(s))" in result.stdout


@pytest.mark.parametrize("package", ["goalkeeper_sim", "aiosmtpd"])
def test_without_the_simulator_demo_says_so_in_one_line_and_exits_2(
    tmp_path: Path, package: str
) -> None:
    result = demo_command("--out", str(tmp_path / "demo"), block=package)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"goalkeeper: the simulator is not installed (no module {package}): pip install -e '.[sim]'"
    ]
    assert not (tmp_path / "demo").exists()
