"""Mails lead with the worst grade (DESIGN §7): subject, server and port order, the evidence
under each port, and `code` in the HTML part as <code>, escaped."""

from __future__ import annotations

from dataclasses import replace

from goalkeeper.model import Finding, Grade
from goalkeeper.notify.render import code_html, headline, render_owner_report
from goalkeeper.scanning.catalog import load_catalog
from tests.test_render import NOW, SENDER, customer_report, finding

CATALOG = load_catalog()


def graded(f: Finding, grade: Grade, evidence: str) -> Finding:
    return replace(f, grade=grade, evidence=evidence)


def render(*findings: Finding) -> tuple[str, str, str]:
    mail = render_owner_report(
        customer_report(*findings),
        environment="prod",
        run_id="run-1",
        sender=SENDER,
        advice=CATALOG.advice,
        generated_at=NOW,
    )
    return mail.subject, mail.text, mail.html


MYSQL = graded(
    finding("203.0.113.5", 3306, "mysql", server="a-db", server_id="s-a"),
    Grade.REACHABLE,
    "MySQL 8.0.36 handshake",
)
REDIS_1 = graded(
    finding("203.0.113.9", 6379, "redis", server="z-cache", server_id="s-z"),
    Grade.UNAUTHENTICATED,
    "Redis 7.0.15 answered `INFO` without a password",
)
REDIS_2 = replace(REDIS_1, target=replace(REDIS_1.target, server_id="s-y", server_name="y"))


def test_the_subject_leads_with_the_service_that_answers_without_a_password() -> None:
    subject, _, _ = render(MYSQL, REDIS_1, REDIS_2)
    assert subject == "Unauthenticated Redis on 2 servers; 1 more dangerous open port"
    # Nothing unauthenticated: the count of open ports, as before.
    assert render(MYSQL)[0] == "1 dangerous open port on 1 of your servers"


def test_headline_names_the_other_services_that_answer_without_a_password() -> None:
    ftp = graded(
        finding("203.0.113.5", 21, "ftp", server="a-db", server_id="s-a"),
        Grade.UNAUTHENTICATED,
        "anonymous FTP login allowed",
    )
    assert headline([REDIS_1, REDIS_2, ftp], CATALOG.advice) == (
        "Unauthenticated Redis and 1 more service on 3 servers"
    )


def test_servers_and_ports_are_ordered_worst_first_with_evidence_under_each_port() -> None:
    unconfirmed = graded(
        finding("203.0.113.5", 5432, "postgresql", server="a-db", server_id="s-a"),
        Grade.UNCONFIRMED,
        "port open; no PostgreSQL reply",
    )
    _, text, html = render(MYSQL, unconfirmed, REDIS_1)
    # z-cache (unauthenticated) comes before a-db (reachable), whatever the names say.
    assert text.index("Server z-cache") < text.index("Server a-db")
    assert text.index("3306/tcp") < text.index("5432/tcp")
    assert "    UNAUTHENTICATED: Redis 7.0.15 answered `INFO` without a password\n" in text
    assert "    REACHABLE: MySQL 8.0.36 handshake\n" in text
    assert "<code>INFO</code>" in html
    assert "`INFO`" not in html
    # nmap's guesses never reach the mail: only what verification wrote.
    assert "guesses" not in text


def test_code_in_html_is_escaped_inside_and_outside() -> None:
    assert str(code_html("run `rm <x>` & <b>")) == "run <code>rm &lt;x&gt;</code> &amp; &lt;b&gt;"
    assert str(code_html("one ` only")) == "one ` only"


def test_the_telegram_summary_counts_findings_per_grade_worst_first() -> None:
    from goalkeeper.notify.summary import render_summary
    from tests.test_render import tick

    plain = finding("203.0.113.7", 11211, "memcached", server="c", server_id="s-c")
    summary = render_summary(tick((REDIS_1, REDIS_2, MYSQL, plain)))
    assert "Grades: unauthenticated: 2 · reachable: 1 · unconfirmed: 0 · not verified: 1" in summary
    assert "without a password" not in summary  # counts only: evidence is for the owner


def test_scan_json_and_findings_json_carry_grade_and_evidence() -> None:
    from goalkeeper.lifecycle import record_from_finding
    from goalkeeper.views import finding_as_dict, record_as_dict

    ticked = finding_as_dict(REDIS_1)  # scan --json
    stored = record_as_dict(record_from_finding(REDIS_1))  # findings --json
    for shown in (ticked, stored):
        assert (shown["grade"], shown["evidence"]) == (
            "unauthenticated",
            "Redis 7.0.15 answered `INFO` without a password",
        )
    assert finding_as_dict(replace(REDIS_1, grade=None))["grade"] is None
