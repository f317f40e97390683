"""Pure logic: scope, findings and whom each report goes to, as tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from ipaddress import ip_address, ip_network

import pytest

from goalkeeper.findings import build_findings, group_reports, unresolved_projects
from goalkeeper.firewall import PortFirewall
from goalkeeper.mailaddress import customer_owner
from goalkeeper.model import Grade, OpenPort, Owner, PortSpec, ScanResult, Target, Transport
from goalkeeper.rootcause import Cause
from goalkeeper.scope import in_scope, select_targets

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
ACME = Owner(name="ACME Ltd", email="admin@acme.example", client_id="7")
BETA = Owner(name="Beta", email="Ops@Beta.example")
PORTS = (
    PortSpec(6379, Transport.TCP, "redis"),
    PortSpec(11211, Transport.UDP, "memcached"),
)


def target(address: str, owner: Owner = ACME, project: str = "p1") -> Target:
    return Target(
        address=ip_address(address), server_name=f"srv-{address}", project_id=project, owner=owner
    )


def test_scope_refuses_outside_and_skips_excluded() -> None:
    targets = [
        target("203.0.113.5"),
        target("203.0.113.9"),
        target("198.51.100.1"),
        target("203.0.113.5"),  # listed twice: the first wins
        target("2001:db8::1"),
    ]
    selection = select_targets(
        targets, allowed=[ip_network("203.0.113.0/24")], exclude=[ip_network("203.0.113.9/32")]
    )
    assert [str(t.address) for t in selection.targets] == ["203.0.113.5"]
    assert [str(t.address) for t in selection.refused] == ["198.51.100.1", "2001:db8::1"]
    assert [str(t.address) for t in selection.excluded] == ["203.0.113.9"]
    assert "2001:db8::1" in {str(t.address) for t in selection.refused}  # IPv4 allowed only
    assert selection.duplicates == 1


@pytest.mark.parametrize(
    ("allowed", "exclude", "bucket"),
    [
        (["203.0.113.0/24"], [], "refused"),  # an IPv4 network never admits an IPv6 address
        (["2001:db8::/32"], [], "targets"),  # IPv6 is scanned like IPv4
        (["2001:db8::/32"], ["2001:db8::/64"], "excluded"),  # the operator's exclude still wins
        (["::/0"], ["2001:db8::1/128"], "excluded"),
    ],
)
def test_ipv6_is_held_to_allowed_networks_and_exclude_like_ipv4(
    allowed: list[str], exclude: list[str], bucket: str
) -> None:
    v6 = target("2001:db8::1")
    allow, skip = [ip_network(n) for n in allowed], [ip_network(n) for n in exclude]
    selection = select_targets([v6], allowed=allow, exclude=skip)
    assert getattr(selection, bucket) == (v6,)
    others = {"targets", "refused", "excluded"} - {bucket}
    assert all(getattr(selection, name) == () for name in others)
    chosen = in_scope([v6.address], allowed=allow, exclude=skip)
    assert chosen == ([v6.address] if bucket == "targets" else [])


def test_empty_allowed_networks_admit_nothing() -> None:
    selection = select_targets([target("203.0.113.5")], allowed=[], exclude=[])
    assert selection.targets == ()
    assert len(selection.refused) == 1


def test_findings_only_for_ports_asked_for_and_known_targets() -> None:
    a, b = target("203.0.113.5"), target("203.0.113.6", BETA, "p2")
    result = ScanResult(
        scanned=frozenset({a.address, b.address}),
        open_ports=(
            OpenPort(b.address, 6379, Transport.TCP, "open (syn-ack)"),
            OpenPort(a.address, 11211, Transport.UDP, "Memcached answered", Grade.UNAUTHENTICATED),
            OpenPort(a.address, 22, Transport.TCP, "not asked for"),
            OpenPort(ip_address("203.0.113.99"), 6379, Transport.TCP, "unknown host"),
        ),
    )
    findings = build_findings(result, {a.address: a, b.address: b}, PORTS, now=NOW)
    assert [(str(f.address), f.port, f.service) for f in findings] == [
        ("203.0.113.5", 11211, "memcached"),
        ("203.0.113.6", 6379, "redis"),
    ]
    assert findings[0].first_seen == findings[0].last_seen == NOW
    assert (findings[0].evidence, findings[0].grade) == (
        "Memcached answered",
        Grade.UNAUTHENTICATED,
    )


def findings_for(*targets: Target) -> list:  # type: ignore[type-arg]
    result = ScanResult(
        scanned=frozenset(t.address for t in targets),
        open_ports=tuple(OpenPort(t.address, 6379, Transport.TCP) for t in targets),
    )
    return list(build_findings(result, {t.address: t for t in targets}, PORTS, now=NOW))


UNKNOWN = Owner(name=None, email=None)


@pytest.mark.parametrize(
    ("redirect", "expected"),
    [
        (
            False,
            [
                ("admin@acme.example", "admin@acme.example", False, 2),
                ("ops@beta.example", "Ops@Beta.example", False, 1),
                ("security@example.com", None, False, 1),
                ("security@example.com", None, False, 1),
            ],
        ),
        (
            True,
            [
                ("security@example.com", "admin@acme.example", True, 2),
                ("security@example.com", "Ops@Beta.example", True, 1),
                ("security@example.com", None, False, 1),
                ("security@example.com", None, False, 1),
            ],
        ),
    ],
)
def test_one_report_per_owner_and_not_found_to_ops(
    redirect: bool, expected: list[tuple[str, str | None, bool, int]]
) -> None:
    findings = findings_for(
        target("203.0.113.5"),
        target("203.0.113.6"),
        target("203.0.113.7", BETA, "p2"),
        target("203.0.113.8", UNKNOWN, "p3"),
        target("203.0.113.9", UNKNOWN, "p4"),
    )
    reports = group_reports(findings, ops_email="security@example.com", redirect=redirect)
    got = [
        (
            r.recipient if r.recipient != "Ops@Beta.example" else r.recipient.lower(),
            r.intended,
            r.redirected,
            len(r.findings),
        )
        for r in reports
    ]
    assert got == expected
    assert [r.key for r in reports] == [
        "admin@acme.example",
        "ops@beta.example",
        "not-found:p3",
        "not-found:p4",
    ]
    assert len({r.key for r in reports}) == len(reports)


def test_unresolved_projects_lists_each_once() -> None:
    findings = findings_for(
        target("203.0.113.8", UNKNOWN, "p3"),
        target("203.0.113.9", UNKNOWN, "p3"),
        target("203.0.113.7", BETA, "p2"),
    )
    assert unresolved_projects(findings) == ("p3",)


@pytest.mark.parametrize(
    "email",
    [
        "two@a.example, three@b.example",
        "Name <x@a.example>",
        "x@a.example\r\nBcc: y@b.example",
        "no-at-sign",
        "x@localhost",
        "x\u202e@a.example",
    ],
)
def test_undeliverable_billing_address_goes_to_ops_as_not_found(email: str) -> None:
    owner = customer_owner("Odd", email)
    findings = findings_for(target("203.0.113.5", owner, "p9"))
    (report,) = group_reports(findings, ops_email="security@example.com", redirect=False)
    assert report.recipient == "security@example.com"
    assert report.not_found
    assert report.key == "not-found:p9"
    (project,) = unresolved_projects(findings)
    assert project.startswith("p9: not a usable e-mail address: ")
    assert repr(email) in project


def test_each_finding_carries_its_cause_as_json_text() -> None:
    off = PortFirewall(port_id="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", port_security_enabled=False)
    known = replace(target("203.0.113.5"), firewall=off)
    unknown = target("203.0.113.6")
    findings = findings_for(known, unknown)
    assert [Cause.from_json(f.cause).kind for f in findings] == [
        "port_security_disabled",
        "unknown",
    ]
    assert Cause.from_json(findings[0].cause).port_id == off.port_id
