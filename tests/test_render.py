"""Rendering: owner mails (subject, routing, Message-ID, escaping) and the Telegram summary."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from ipaddress import ip_address
from pathlib import Path

import pytest

from goalkeeper.compose import compose_mails
from goalkeeper.config import Settings
from goalkeeper.model import (
    UNKNOWN_OWNER,
    Finding,
    FindingStatus,
    MailOutcome,
    OutgoingMail,
    Owner,
    OwnerLookup,
    OwnerLookupState,
    OwnerReport,
    ServiceAdvice,
    Target,
    TickReport,
    Transport,
)
from goalkeeper.notify.render import MailFooter, header_text, render_owner_report, to_mime
from goalkeeper.notify.summary import render_summary
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper_sim.telegram import parse_telegram_html

NOW = datetime(2024, 5, 6, 6, 0, tzinfo=UTC)
SENDER = "Goalkeeper <security@example.com>"
ACME = Owner(name="ACME Ltd", email="admin@acme.example", client_id="42")
HOSTILE = "<script>alert(1)</script>\r\nBcc: evil@x"
ADVICE = {
    "redis": ServiceAdvice(
        service="redis",
        title="Redis key-value store",
        exposed="Your Redis database answers anyone.",
        risk="Attackers read your data and take over the server.",
        fix=("Bind Redis to 127.0.0.1.", "Remove 6379/tcp from the security group."),
    ),
}


def finding(
    address: str,
    port: int,
    service: str,
    *,
    server: str = "web-1",
    server_id: str = "srv-1",
    project: str = "acme-prod",
    project_id: str = "p-1",
    owner: Owner = ACME,
    status: FindingStatus = FindingStatus.NEW,
) -> Finding:
    target = Target(ip_address(address), server, server_id, project_id, project, owner)
    return Finding(
        address=target.address,
        port=port,
        protocol=Transport.TCP,
        service=service,
        target=target,
        first_seen=datetime(2024, 5, 1, tzinfo=UTC),
        last_seen=NOW,
        status=status,
    )


def render(
    report: OwnerReport,
    *,
    environment: str = "prod",
    run_id: str = "run-1",
    footer: MailFooter = MailFooter(),  # noqa: B008 (frozen)
) -> OutgoingMail:
    return render_owner_report(
        report,
        environment=environment,
        run_id=run_id,
        sender=SENDER,
        advice=ADVICE,
        generated_at=NOW,
        footer=footer,
    )


def customer_report(*findings: Finding) -> OwnerReport:
    return OwnerReport(
        recipient="admin@acme.example", intended="admin@acme.example", owner=ACME, findings=findings
    )


def parsed(mail: OutgoingMail) -> EmailMessage:
    message = email.message_from_bytes(to_mime(mail).as_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_customer_mail_is_addressed_and_labelled() -> None:
    mail = render(customer_report(finding("203.0.113.5", 6379, "redis")))
    assert mail.recipient == "admin@acme.example"
    assert mail.sender == SENDER
    # A customer in production reads no internal label: the headers keep them for staff.
    assert mail.subject == "1 dangerous open port on 1 of your servers"
    assert "Hello ACME Ltd" in mail.text
    assert "run-1" not in mail.text and "run-1" not in mail.html and "[prod]" not in mail.text
    assert mail.headers["X-Goalkeeper-Run"] == "run-1"
    assert mail.headers["X-Goalkeeper-Environment"] == "prod"
    assert "Reply to this mail if you have questions." in mail.text


def test_a_stage_mail_keeps_its_label_and_run_id() -> None:
    mail = render(customer_report(finding("203.0.113.5", 6379, "redis")), environment="stage")
    assert mail.subject == "[stage] 1 dangerous open port on 1 of your servers"
    assert "[stage] run run-1" in mail.text and "[stage] run run-1" in mail.html


def test_every_mail_says_who_scans_from_where_and_where_replies_go() -> None:
    footer = MailFooter(
        reply_to="abuse@provider.example",
        scanned_from=("192.0.2.10", "2001:db8::10"),
        info_url="https://provider.example/scanning",
        contact="abuse@provider.example",
    )
    mail = render(customer_report(finding("203.0.113.5", 6379, "redis")), footer=footer)
    for text in (mail.text, mail.html):
        assert "from 192.0.2.10, 2001:db8::10" in text
        assert "https://provider.example/scanning" in text
        assert "Abuse reports and questions: abuse@provider.example" in text
    assert parsed(mail)["Reply-To"] == "abuse@provider.example"
    assert "Reply-To" not in render(customer_report(finding("203.0.113.5", 6379, "redis"))).headers


def test_message_id_is_a_function_of_run_and_recipient() -> None:
    report = customer_report(finding("203.0.113.5", 6379, "redis"))
    first = render(report).message_id
    digest = hashlib.sha256(b"run-1\0admin@acme.example").hexdigest()[:32]
    assert first == f"<{digest}@example.com>"
    assert render(report).message_id == first
    assert render(report, run_id="run-2").message_id != first
    other = replace(report, recipient="security@example.com")
    assert render(other).message_id != first


def test_mail_groups_ports_by_server_with_advice_once_per_service() -> None:
    report = customer_report(
        finding("203.0.113.5", 6379, "redis"),
        finding("203.0.113.5", 27017, "mongodb", status=FindingStatus.OPEN),
        finding("203.0.113.9", 6379, "redis", server="db-2", server_id="srv-2"),
    )
    mail = render(report)
    assert mail.subject == "3 dangerous open ports on 2 of your servers"
    for text in (mail.text, mail.html):
        assert "Server web-1" in text
        assert "Server db-2" in text
        assert "Redis key-value store" in text
        assert "Bind Redis to 127.0.0.1." in text
        assert "Attackers read your data" in text
    assert mail.text.count("What is exposed: Your Redis database answers anyone.") == 1
    # A service the catalog does not know still gets plain advice instead of a crash.
    assert "A mongodb service answers on this port" in mail.text
    web_block = mail.text.split("Server web-1")[1].split("Server ")[0]
    assert "6379/tcp" in web_block
    assert "27017/tcp" in web_block
    assert "open since 2024-05-01" in web_block


def test_redirected_mail_goes_to_ops_and_says_for_whom() -> None:
    report = OwnerReport(
        recipient="security@example.com",
        intended="admin@acme.example",
        owner=ACME,
        findings=(finding("203.0.113.5", 6379, "redis"),),
        redirected=True,
    )
    mail = render(report, environment="stage")
    assert mail.recipient == "security@example.com"
    assert mail.subject.startswith("[stage] for admin@acme.example: ")
    assert "meant for admin@acme.example" in mail.text
    assert "meant for <strong>admin@acme.example</strong>" in mail.html
    message = parsed(mail)
    assert message["To"] == "security@example.com"
    assert message["X-Goalkeeper-Intended-Recipient"] == "admin@acme.example"


def test_owner_not_found_mail_lists_projects_for_ops() -> None:
    report = OwnerReport(
        recipient="security@example.com",
        intended=None,
        owner=UNKNOWN_OWNER,
        findings=(
            finding("198.51.100.7", 6379, "redis", project="orphan", project_id="p-77"),
            finding("198.51.100.8", 11211, "memcached", project="", project_id="p-78"),
        ),
    )
    mail = render(report)
    assert mail.subject.startswith("OWNER NOT FOUND: 2 dangerous open ports in ")
    assert "Reply to this mail" not in mail.text and "Reply to this mail" not in mail.html
    assert "orphan" in mail.subject
    assert "p-78" in mail.subject  # a project without a name is named by its id
    assert "OWNER NOT FOUND" in mail.text
    assert "project orphan, id p-77" in mail.text
    assert "id p-78" in mail.text
    assert "OWNER NOT FOUND" in mail.html
    assert parsed(mail)["X-Goalkeeper-Owner"] == "NOT FOUND"


def test_hostile_names_stay_inert_in_headers_html_and_text() -> None:
    owner = Owner(name="Evil\r\nCc: victim@example.org", email="admin@acme.example")
    report = OwnerReport(
        recipient="security@example.com",
        intended=None,
        owner=owner,
        findings=(
            finding("203.0.113.5", 6379, "redis", server=HOSTILE, project=HOSTILE, owner=owner),
        ),
    )
    mail = render(report)
    assert "\r" not in mail.subject
    assert "\n" not in mail.subject
    message = parsed(mail)
    assert message["Bcc"] is None
    assert message["Cc"] is None
    assert message.get_all("Subject") is not None
    assert len(message.get_all("Subject") or []) == 1
    assert "<script>alert(1)</script> Bcc: evil@x" in str(message["Subject"])
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert isinstance(html_part, EmailMessage)
    assert isinstance(text_part, EmailMessage)
    html_body = html_part.get_content()
    assert "<script>" not in html_body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Bcc: evil@x" in html_body
    text_body = text_part.get_content()
    assert "Server <script>alert(1)</script> Bcc: evil@x, project" in text_body
    assert not any(line.startswith(("Bcc:", "Cc:")) for line in text_body.splitlines())


def test_to_mime_builds_multipart_alternative_with_all_headers() -> None:
    mail = render(customer_report(finding("203.0.113.5", 6379, "redis")))
    message = parsed(mail)
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == SENDER
    assert message["To"] == "admin@acme.example"
    assert message["Message-ID"] == mail.message_id
    assert message["Subject"] == mail.subject
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] == "Mon, 06 May 2024 06:00:00 +0000"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"recipient": "admin@acme.example\r\nBcc: evil@x"},
        {"recipient": "a@x.example, b@y.example"},
        {"headers": {"Bcc": "evil@x.example"}},
        {"headers": {"X-Bad\r\nBcc": "evil@x.example"}},
    ],
)
def test_to_mime_refuses_mails_that_would_route_elsewhere(change: dict[str, object]) -> None:
    mail = render(customer_report(finding("203.0.113.5", 6379, "redis")))
    with pytest.raises(ValueError, match=r"address|header"):
        to_mime(replace(mail, **change))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("a\r\nBcc: x", "a Bcc: x"),
        ("tab\tand\x00nul", "tab and nul"),
        ("rtl\u202eoverride\u2028line", "rtl override line"),
        ("x" * 300, "x" * 199 + "…"),
    ],
)
def test_header_text_flattens_control_characters(raw: str, expected: str) -> None:
    assert header_text(raw) == expected


def test_templates_dir_overrides_one_template(tmp_path: Path) -> None:
    (tmp_path / "report.txt.j2").write_text("Custom for {{ owner.name }}: {{ open_count }}\n")
    report = customer_report(finding("203.0.113.5", 6379, "redis"))
    mail = render_owner_report(
        report,
        environment="prod",
        run_id="run-1",
        sender=SENDER,
        advice=ADVICE,
        generated_at=NOW,
        templates_dir=tmp_path,
    )
    assert mail.text == "Custom for ACME Ltd: 1\n"
    assert "Redis key-value store" in mail.html  # the built-in HTML template still applies


def test_only_resolved_findings_make_a_thank_you_mail() -> None:
    closed = finding("203.0.113.5", 6379, "redis", status=FindingStatus.RESOLVED)
    mail = render(customer_report(closed))
    assert mail.subject == "Closed: 1 port on 1 server"
    assert "Closed since our last report" in mail.text
    assert "found closed the exposed service listed below" in mail.text
    assert "What is exposed" not in mail.text


def test_an_empty_report_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one finding"):
        render(customer_report())


CLOSED = (
    finding("198.51.100.7", 6379, "redis", status=FindingStatus.RESOLVED),
    finding("198.51.100.7", 9200, "elasticsearch", status=FindingStatus.RESOLVED),
    finding("198.51.100.8", 6379, "redis", server_id="srv-2", status=FindingStatus.RESOLVED),
)
EXPOSED = (finding("198.51.100.9", 27017, "mongodb", server_id="srv-3", status=FindingStatus.OPEN),)
NOBODY = Owner(name="no mail", email=None)


@pytest.mark.parametrize("environment", ["prod", "stage"])
@pytest.mark.parametrize("send_to_customers", [True, False])
@pytest.mark.parametrize("owner", [ACME, NOBODY], ids=["customer", "not-found"])
@pytest.mark.parametrize(
    "findings",
    [CLOSED[:1], CLOSED, (*CLOSED, *EXPOSED), EXPOSED],
    ids=["one-closed", "only-closed", "closed-and-open", "only-open"],
)
def test_no_mail_on_any_path_says_0_dangerous_open_ports(
    environment: str, send_to_customers: bool, owner: Owner, findings: tuple[Finding, ...]
) -> None:
    """Who gets which mail: the customer, NOT FOUND to ops, stage and customer-mail-off rerouted."""
    settings = Settings.model_validate(
        {
            "environment": environment,
            "scan": {"allowed_networks": ["198.51.100.0/24"]},
            "notify": {"ops_email": "security@example.com", "send_to_customers": send_to_customers},
        }
    )
    owned = [replace(f, target=replace(f.target, owner=owner)) for f in findings]
    composed = list(
        compose_mails(owned, settings=settings, catalog=load_catalog(), run_id="r", now=NOW)
    )
    (mail,) = composed
    report, message = mail.report, mail.message
    subject, text, html = (message.payload[part] for part in ("subject", "text", "html"))
    for words in (subject, text, html):
        assert re.search(r"\b0 (dangerous|exposed|open)", words) is None, words
    exposed = sum(f.status != FindingStatus.RESOLVED for f in findings)
    if not exposed:
        closed = len(findings)
        servers = len({f.target.server_id for f in findings})
        says = f"{closed} port{'s' * (closed != 1)} on {servers} server{'s' * (servers != 1)}"
        expected = f"OWNER NOT FOUND: closed {says} in" if report.not_found else f"Closed: {says}"
        assert expected in subject
        assert "dangerous" not in subject
        assert "Closed since our last report (thank you)" in text
    else:
        assert f"{exposed} dangerous open port" in subject
    assert report.not_found is (owner is NOBODY)
    assert ("for admin@acme.example:" in subject) is (
        owner is ACME and (environment == "stage" or not send_to_customers)
    )


def tick(findings: tuple[Finding, ...], **overrides: object) -> TickReport:
    base = TickReport(
        run_id="run-<7>",
        environment="prod",
        started_at=NOW,
        finished_at=NOW,
        inventory_source="openstack",
        inventory_age_seconds=7300,
        inventory_stale_reason=None,
        targets=130,
        refused=("192.0.2.1", "192.0.2.2"),
        excluded=4,
        hosts_scanned=127,
        not_scanned={
            "203.0.113.200": "host timed out",
            "203.0.113.201": "host timed out",
            "203.0.113.202": "nmap exited with status 1",
        },
        findings=findings,
        mails=(
            MailOutcome("admin@acme.example", "admin@acme.example", "ACME", 2, "<a@b>", True),
            MailOutcome("security@example.com", None, None, 1, "<c@d>", True),
            MailOutcome("x@y.example", "x@y.example", "X", 1, "<e@f>", False, "550 <no> user"),
        ),
        owners_not_found=("orphan & co",),
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def test_summary_reports_every_count_and_lists_every_exposed_host() -> None:
    findings = tuple(
        finding(f"203.0.113.{n}", port, service, server=f"web-{n}")
        for n in range(1, 121)
        for port, service in ((6379, "redis"), (27017, "mongodb"))
    )
    findings += (finding("203.0.113.250", 11211, "memcached", server=HOSTILE),)
    summary = render_summary(tick(findings, inventory_stale_reason="Fleio <down>"))
    assert "<b>Goalkeeper [prod]</b> run <code>run-&lt;7&gt;</code>" in summary
    assert "Targets: 130 · scanned: 127 · <b>not scanned: 3</b>" in summary
    assert "host timed out (2); nmap exited with status 1 (1)" in summary
    assert "Refused (outside allowed_networks): 2" in summary
    assert "Excluded: 4" in summary
    assert "<b>Open findings: 241</b>" in summary
    assert "  redis: 120" in summary
    assert "  memcached: 1" in summary
    assert "Owners mailed: 2 (owner not found: 1)" in summary
    assert "orphan &amp; co" in summary
    assert "Mail failures: 1" in summary
    assert "x@y.example: 550 &lt;no&gt; user" in summary
    assert "Inventory: openstack, 2 h old" in summary
    assert "Inventory is stale</b>: Fleio &lt;down&gt;" in summary
    host_lines = [line for line in summary.splitlines() if line.startswith("<code>203.")]
    assert len(host_lines) == 121
    assert (
        host_lines[0]
        == "<code>203.0.113.1</code> web-1 · acme-prod: 6379/tcp redis, 27017/tcp mongodb"
    )
    assert "<script>" not in summary
    assert "&lt;script&gt;" in summary
    # Only the tags Telegram knows, properly nested: the fake parses it as Telegram would.
    assert "web-120" in parse_telegram_html(summary)


def test_summary_can_cap_the_host_list() -> None:
    findings = tuple(finding(f"203.0.113.{n}", 6379, "redis") for n in range(1, 11))
    summary = render_summary(tick(findings), top_hosts=3)
    assert sum(line.startswith("<code>") for line in summary.splitlines()) == 3
    assert "… and 7 more" in summary


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        (
            OwnerLookup(OwnerLookupState.ON, projects=12, resolved=0, listed=40),
            "⚠️ <b>Owner lookup incident</b>: Fleio resolved owners for 0 of 12 projects (it listed"
            " 40), below the minimum share of 50% (inventory.fleio.min_resolved_share)",
        ),
        (
            OwnerLookup(OwnerLookupState.ON, projects=10, resolved=4, listed=4, min_share=0.5),
            "⚠️ <b>Owner lookup incident</b>: Fleio resolved owners for 4 of 10 projects",
        ),
        (
            OwnerLookup(OwnerLookupState.ON, projects=10, resolved=0, listed=0, min_share=0.0),
            "⚠️ <b>Owner lookup incident</b>: Fleio resolved owners for 0 of 10 projects (it listed"
            " none)",
        ),
        (
            OwnerLookup(OwnerLookupState.UNCONFIGURED, projects=3),
            "⚠️ <b>Owner lookup incident</b>: Fleio is not configured",
        ),
        (
            OwnerLookup(OwnerLookupState.ON, projects=10, resolved=9, listed=11),
            "Owners: Fleio resolved owners for 9 of 10 projects (it listed 11)",
        ),
        (
            OwnerLookup(OwnerLookupState.OFF, projects=10),
            "Owners: off by choice (inventory.fleio.enabled: false): every owner is NOT FOUND",
        ),
    ],
)
def test_summary_says_how_owners_were_looked_up(lookup: OwnerLookup, expected: str) -> None:
    summary = render_summary(tick((), owner_lookup=lookup))
    (line,) = [line for line in summary.splitlines() if ("wner" in line and "resolved" in line)
               or "off by choice" in line or "not configured" in line]  # fmt: skip
    assert line.startswith(expected)
    assert ("incident" in line) is lookup.incident
    assert ("⚠️" in line) is lookup.incident


def test_summary_of_a_static_inventory_says_nothing_of_billing() -> None:
    summary = render_summary(tick((), inventory_source="static"))
    assert "Owner lookup" not in summary
    assert "Owners:" not in summary


def test_summary_counts_findings_no_longer_monitored_by_reason() -> None:
    off_list = replace(
        finding("203.0.113.5", 9200, "elasticsearch", status=FindingStatus.UNMONITORED),
        unmonitored_reason="port no longer on the scan list",
    )
    timed_out = [
        replace(
            finding(f"203.0.113.{n}", 6379, "redis", status=FindingStatus.UNMONITORED),
            unmonitored_reason="host not scanned: <nmap> host timeout",
        )
        for n in (6, 7)
    ]
    summary = render_summary(tick((), unmonitored=(off_list, *timed_out)))
    assert (
        "<b>No longer monitored: 3</b> (host not scanned: &lt;nmap&gt; host timeout (2); "
        "port no longer on the scan list (1))"
    ) in summary
    assert "<b>Open findings: 0</b> (new: 0, resolved: 0)" in summary
    assert "No longer monitored" not in render_summary(tick(()))
