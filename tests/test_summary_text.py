"""Customer strings in the Telegram summary: one clean line each, capped like a mail header."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address

from goalkeeper.model import Finding, MailOutcome, Owner, Target, TickReport, Transport
from goalkeeper.notify.summary import NAME_LIMIT, TEXT_LIMIT, render_summary
from goalkeeper.notify.telegram import split_message

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
OWNER = Owner(name="ACME", email="admin@acme.example")
HOSTILE = "line1\nSubject: fake\rline3\u2028line4\u202eevil\x00end"


def finding(address: str, server: str, project: str = "prj") -> Finding:
    target = Target(ip_address(address), server, "s-1", "p-1", project, OWNER)
    return Finding(target.address, 6379, Transport.TCP, "redis", target, NOW, NOW)


def report(findings: tuple[Finding, ...], **extra: object) -> TickReport:
    return TickReport(
        run_id="r-1",
        environment="prod",
        started_at=NOW,
        finished_at=NOW,
        inventory_source="openstack",
        inventory_age_seconds=30,
        inventory_stale_reason=extra.pop("stale", None),  # type: ignore[arg-type]
        targets=len(findings),
        refused=(),
        excluded=0,
        hosts_scanned=len(findings),
        not_scanned={},
        findings=findings,
        **extra,  # type: ignore[arg-type]
    )


def test_control_and_format_characters_forge_no_line() -> None:
    summary = render_summary(
        report(
            (finding("203.0.113.5", HOSTILE, project=HOSTILE),),
            owners_not_found=(HOSTILE,),
            mails=(MailOutcome(HOSTILE, HOSTILE, None, 1, "<a@b>", False, HOSTILE),),
            stale=HOSTILE,
            warnings=(HOSTILE,),
            notification_failures=(HOSTILE,),
        )
    )
    assert not any(line.startswith("Subject:") for line in summary.splitlines())
    for char in "\r\u2028\u202e\x00":
        assert char not in summary
    (host,) = [line for line in summary.splitlines() if line.startswith("<code>203.0.113.5")]
    assert "line1 Subject: fake line3 line4 evil end" in host


def test_huge_names_are_capped_and_the_summary_stays_one_message() -> None:
    huge = "x" * 100_000
    summary = render_summary(
        report(
            (finding("203.0.113.5", huge, project=huge), finding("203.0.113.6", huge)),
            owners_not_found=(huge,),
            stale=huge,
        )
    )
    assert len(split_message(summary)) == 1
    (host,) = [line for line in summary.splitlines() if line.startswith("<code>203.0.113.5")]
    assert f"{'x' * (NAME_LIMIT - 1)}…" in host
    assert "x" * NAME_LIMIT not in host
    stale = next(line for line in summary.splitlines() if "Inventory is stale" in line)
    assert "x" * TEXT_LIMIT not in stale
