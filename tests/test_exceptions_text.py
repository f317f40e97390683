"""What mails, the Telegram summary, `findings` and the config say of exceptions (DESIGN §9):
accepted ports listed apart, the cap, the end, unreadable values, the quoted command, the
static file's `allow`, provider entries validated with the rest of the config."""

from __future__ import annotations

import io
import shlex
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from goalkeeper.cli import _status_cell, print_report
from goalkeeper.compose import with_reports
from goalkeeper.config import ConfigError, Settings
from goalkeeper.exceptions import Acknowledgement, Allowance
from goalkeeper.inventory.static import read_static_targets
from goalkeeper.lifecycle import record_from_finding
from goalkeeper.metrics import Metrics
from goalkeeper.model import (
    Finding,
    FindingStatus,
    Owner,
    OwnerReport,
    Target,
    TickReport,
    Transport,
)
from goalkeeper.notify.accepted import allow_command
from goalkeeper.notify.render import render_owner_report
from goalkeeper.notify.summary import render_summary
from goalkeeper.state.records import TickRecord
from goalkeeper.validity import load_settings
from goalkeeper.views import finding_as_dict, record_as_dict

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
ACME = Owner(name="ACME Ltd", email="admin@acme.example")
SERVER_ID = "5f0c6e5a-26f4-4d6e-9a1b-0d3f2f0f6b1c"
ACK = Acknowledgement("customer", "public DNS", date(2027, 3, 31), date(2027, 3, 31), NOW)
HOSTILE = "x' ; rm -rf / ; echo '<b>"
REPORT = TickReport(
    run_id="r1", environment="prod", started_at=NOW, finished_at=NOW + timedelta(seconds=1),
    inventory_source="openstack", inventory_age_seconds=1, inventory_stale_reason=None,
    targets=2, refused=(), excluded=0, hosts_scanned=2, not_scanned={}, findings=(),
)  # fmt: skip


def finding(
    port: int = 6379,
    protocol: Transport = Transport.TCP,
    *,
    status: FindingStatus = FindingStatus.NEW,
    target: Target | None = None,
    **extra: object,
) -> Finding:
    target = target or Target(ip_address("198.51.100.10"), "web-1", SERVER_ID, "p1", "acme", ACME)
    service = "dns" if port == 53 else "redis"
    return Finding(target.address, port, protocol, service, target, NOW, NOW, status=status,
                   **extra)  # type: ignore[arg-type]  # fmt: skip


def mail_text(*findings: Finding) -> tuple[str, str]:
    report = OwnerReport("admin@acme.example", "admin@acme.example", ACME, findings)
    mail = render_owner_report(
        report, environment="prod", run_id="r1", sender="Goalkeeper <gk@example.com>",
        advice={}, generated_at=NOW, max_exception_days=180,
    )  # fmt: skip
    return mail.text, mail.html


def test_an_acknowledged_port_is_listed_as_accepted_not_as_exposed() -> None:
    accepted = finding(53, Transport.UDP, status=FindingStatus.ACKNOWLEDGED, acknowledged=ACK)
    text, html = mail_text(finding(), accepted)
    exposed, _, rest = text.partition("Accepted, so not reported as exposed:")
    assert "found 1 dangerous service " in exposed and "53/udp" not in exposed
    assert "198.51.100.10  53/udp  dns  (server web-1): accepted by you until 2027-03-31 " \
           "(public DNS)" in rest  # fmt: skip
    assert "accepted by you until 2027-03-31 (public DNS)" in html


def test_a_reason_is_escaped_in_html() -> None:
    hostile = replace(ACK, reason=HOSTILE)
    _, html = mail_text(finding(), finding(53, Transport.UDP, status=FindingStatus.ACKNOWLEDGED,
                                           acknowledged=hostile))  # fmt: skip
    assert "<b>" not in html and "echo &#39;&lt;b&gt;" in html


def test_a_capped_exception_says_so_and_a_provider_one_says_whose() -> None:
    capped = replace(ACK, requested_until=date(2099, 1, 1), source="provider")
    text, _ = mail_text(finding(), finding(53, Transport.UDP, status=FindingStatus.ACKNOWLEDGED,
                                           acknowledged=capped))  # fmt: skip
    said = (
        "accepted by your provider until 2027-03-31 (public DNS); you asked for 2099-01-01, "
        "but an exception is accepted for at most 180 days at a time"
    )
    assert said in " ".join(text.split())


def test_an_ended_exception_and_one_not_honoured_are_said_at_the_port() -> None:
    ended = replace(ACK, until=date(2026, 12, 1))
    text, _ = mail_text(
        finding(53, Transport.UDP, ended=ended),
        finding(not_honoured="your goalkeeper.allow exception is not honoured for this port: "
                "the service answers anyone without a password"),
    )  # fmt: skip
    assert "Note: your exception ended on 2026-12-01 (public DNS), so this port is reported " \
           "as open again." in text  # fmt: skip
    assert "Note: your goalkeeper.allow exception is not honoured" in text
    removed, _ = mail_text(finding(53, Transport.UDP, ended=ACK))
    assert "(public DNS, until 2027-03-31) no longer applies" in removed


def test_an_unreadable_value_is_told_with_the_server_and_the_problem() -> None:
    target = Target(ip_address("198.51.100.10"), "web-1", SERVER_ID, "p1", "acme", ACME,
                    allow_problem="the date 2027-13-01 is not a date")  # fmt: skip
    text, html = mail_text(finding(target=target))
    assert "We could not read the goalkeeper.allow setting on server web-1: the date " \
           "2027-13-01 is not a date." in text  # fmt: skip
    assert "the date 2027-13-01 is not a date" in html


def test_the_command_names_the_server_uuid_and_quotes_customer_text() -> None:
    current = Allowance(frozenset({(53, "udp")}), date(2027, 1, 1), HOSTILE)
    command = allow_command(SERVER_ID, [(6379, "tcp")], current=current, today=NOW.date(),
                            max_days=180)  # fmt: skip
    assert command is not None
    words = shlex.split(command)
    assert words == [
        "openstack", "server", "set", "--property",
        f"goalkeeper.allow=53/udp,6379/tcp;until=2027-05-31;reason={HOSTILE}", SERVER_ID,
    ]  # fmt: skip
    fresh = allow_command(SERVER_ID, [(6379, "tcp")], current=None, today=NOW.date(), max_days=30)
    assert fresh == (
        "openstack server set --property 'goalkeeper.allow=6379/tcp;until=2027-01-01;reason=WHY'"
        f" {SERVER_ID}"
    )


@pytest.mark.parametrize(
    "server_id", ["web-1", "", "srv; rm -rf /", "{" + SERVER_ID + "}", "urn:uuid:" + SERVER_ID]
)
def test_no_command_for_a_server_id_that_is_not_a_plain_uuid(server_id: str) -> None:
    assert allow_command(server_id, [(6379, "tcp")], current=None, today=NOW.date(),
                         max_days=180) is None  # fmt: skip


def test_the_mail_gives_the_command_for_the_server_and_its_port() -> None:
    text, html = mail_text(finding())
    expected = (
        "openstack server set --property 'goalkeeper.allow=6379/tcp;until=2027-05-31;reason=WHY'"
        f" {SERVER_ID}"
    )
    assert expected in text
    assert expected.replace("'", "&#39;") in html


def test_acknowledged_findings_ride_only_in_a_mail_that_goes_out_anyway() -> None:
    accepted = finding(53, Transport.UDP, status=FindingStatus.ACKNOWLEDGED, acknowledged=ACK)
    assert with_reports([accepted], told=[]) == []
    assert with_reports([accepted], told=[finding()]) == [accepted]
    other = Target(ip_address("198.51.100.11"), owner=Owner(name="B", email="b@b.example"))
    assert with_reports([accepted], told=[finding(target=other)]) == []


def test_the_summary_counts_accepted_findings_and_unreadable_values() -> None:
    accepted = finding(53, Transport.UDP, status=FindingStatus.ACKNOWLEDGED, acknowledged=ACK)
    bad = Target(ip_address("198.51.100.12"), server_id="s2", allow_problem="nonsense")
    report = replace(
        REPORT, findings=(finding(), accepted, finding(target=bad)), acknowledged=(accepted,)
    )
    summary = render_summary(report)
    assert "(new: 2, resolved: 0, accepted: 1)" in summary
    assert "Servers with an unreadable goalkeeper.allow: 1" in summary


def test_findings_shows_status_source_reason_and_until() -> None:
    accepted = finding(53, Transport.UDP, status=FindingStatus.ACKNOWLEDGED, acknowledged=ACK)
    row = record_as_dict(record_from_finding(accepted))
    assert row["status"] == "acknowledged"
    assert row["exception"] == {
        "source": "customer", "reason": "public DNS", "until": "2027-03-31",
        "requested_until": "2027-03-31", "capped": False, "since": NOW.isoformat(),
    }  # fmt: skip
    assert _status_cell(row) == "acknowledged (customer until 2027-03-31: public DNS)"
    assert record_as_dict(record_from_finding(finding()))["exception"] is None
    ticked = finding_as_dict(accepted)  # scan --json
    assert ticked["status"] == "acknowledged" and ticked["exception"]["until"] == "2027-03-31"
    out = io.StringIO()
    print_report(replace(REPORT, findings=(accepted,), acknowledged=(accepted,)), out)
    assert "53/udp dns" in out.getvalue()
    assert "ACKNOWLEDGED (customer until 2027-03-31)" in out.getvalue()


def test_the_static_file_reads_allow_and_a_strict_read_refuses_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "targets:\n"
        "  - {address: 127.77.0.10, allow: '53/udp;until=2027-01-01;reason=dns'}\n"
        "  - {address: 127.77.0.11, allow: '53/udp;until=2027-13-01;reason=dns'}\n"
    )
    allowed = (ip_network("127.77.0.0/16"),)
    good, bad = read_static_targets(path, allowed=allowed)
    assert good.allow == Allowance(frozenset({(53, "udp")}), date(2027, 1, 1), "dns")
    assert bad.allow is None and bad.allow_problem == "the date 2027-13-01 is not a date"
    with pytest.raises(ConfigError) as raised:
        read_static_targets(path, allowed=allowed, strict=True)
    (problem,) = raised.value.problems
    assert (problem.key, problem.message) == (
        "targets[1].allow",
        "the date 2027-13-01 is not a date",
    )


def test_provider_exceptions_are_validated_with_the_rest_of_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "scan: {allowed_networks: [198.51.100.0/24]}\n"
        "inventory: {source: static, static_file: inventory.yaml}\n"
        "exceptions:\n"
        "  - {network: 198.51.100.0/28, ports: ['53/udp'], until: 2027-06-30, reason: dns}\n"
        "  - {address: 203.0.113.5, ports: ['6379/tcp'], until: 2027-06-30, reason: cache}\n"
        "  - {ports: ['0/tcp'], until: '2027-06-31', reason: ''}\n"
        "  - {address: 198.51.100.7, project_id: p1, ports: ['53/udp'], until: 2027-06-30,"
        " reason: both}\n"
    )
    (tmp_path / "inventory.yaml").write_text("targets: []\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    keys = sorted(p.key for p in raised.value.problems)
    assert keys == [
        "exceptions[2].ports",
        "exceptions[2].reason",
        "exceptions[2].until",
        "exceptions[3]",
    ], raised.value.problems  # fmt: skip
    # Once the entries themselves are valid, one no scan reaches is named too.
    path.write_text(path.read_text().split("  - {ports:")[0])
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ={})
    (problem,) = raised.value.problems
    assert problem.key == "exceptions[1]"
    assert "203.0.113.5 is outside scan.allowed_networks" in problem.message


def test_settings_give_the_provider_exceptions_as_rules() -> None:
    settings = Settings.model_validate(
        {
            "exceptions": [
                {
                    "project_id": "p1",
                    "ports": ["6379/TCP"],
                    "until": "2027-01-31",
                    "reason": "migration",
                }
            ]
        }
    )
    (rule,) = settings.provider_exceptions()
    assert rule.applies_to(ip_address("198.51.100.10"), "p1")
    assert rule.allowance.covers(6379, "tcp") and rule.allowance.source == "provider"


def test_acknowledged_findings_are_a_gauge_by_source_kept_in_the_tick_record() -> None:
    metrics = Metrics()

    def series() -> dict[str, float]:
        text = generate_latest(metrics.registry).decode()
        return {
            s.labels["source"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "goalkeeper_acknowledged_findings"
            for s in family.samples
        }

    assert series() == {"customer": 0, "provider": 0}  # before the first tick
    record = TickRecord("success", 2, (), 0, acknowledged={"customer": 3})
    restored = TickRecord.from_summary(record.summary())
    assert restored is not None
    metrics.set_acknowledged_findings(restored.acknowledged)
    assert series() == {"customer": 3, "provider": 0}
    old = record.summary()
    del old["acknowledged"]  # a record written before exceptions
    assert TickRecord.from_summary(old) == replace(record, acknowledged={})
