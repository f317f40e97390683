"""Turns reports into words: one mail per owner and the ops chat summary of a tick.

Pure: it loads templates and builds strings and MIME objects, nothing else. It never reads the
clock (times are arguments), never sends anything and never imports a network library.
Server, project and owner names are chosen by customers, so they are escaped in HTML and made
harmless before they reach a mail header: no CR, LF or other control character gets through.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, parseaddr
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from goalkeeper.model import (
    Finding,
    FindingStatus,
    Grade,
    OutgoingMail,
    OwnerReport,
    ServiceAdvice,
    grade_rank,
)
from goalkeeper.notify.accepted import ExceptionWords
from goalkeeper.notify.causes import CauseText, cause_text, latent_blocks, rule_ports

SUBJECT_LIMIT = 200
# Headers an override template or a stored mail may not set: they route or frame the message.
_RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "sender", "subject", "message-id", "mime-version", "return-path"}
)


def header_text(value: str, *, limit: int = SUBJECT_LIMIT) -> str:
    """`value` made safe for one header line: control and format characters become spaces."""
    if not value.isprintable():  # printable: no C* or Z* character but the space (the rule)
        value = "".join(
            " " if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char
            for char in value
        )
    single = " ".join(value.split())
    return single if len(single) <= limit else single[: limit - 1].rstrip() + "…"


def message_id(run_id: str, recipient: str, sender: str) -> str:
    """The same (run, recipient) always gets the same Message-ID, so a resend is recognisable.

    `recipient` is the logical one (the report's key): in stage, many mails share one address.
    """
    digest = hashlib.sha256(f"{run_id}\0{recipient}".encode()).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "goalkeeper.invalid"
    return f"<{digest}@{domain}>"


@dataclass(frozen=True, slots=True)
class PortLine:
    address: str
    port: int
    protocol: str
    service: str
    title: str
    first_seen: str
    new: bool
    evidence: str
    grade: str  # "" when not verified
    cause: CauseText  # which rule lets it through and the commands that close it (DESIGN §8)
    # Exceptions (DESIGN §9): "accepted by you until ...", why one ended or was not honoured.
    accepted: str = ""
    exception_note: str = ""


@dataclass(frozen=True, slots=True)
class ServerBlock:
    name: str
    server_id: str
    project_name: str
    project_id: str
    addresses: tuple[str, ...]
    ports: tuple[PortLine, ...]
    region: str = ""  # the OpenStack region ("" with one region): one mail spans them all
    allow_problem: str = ""  # its goalkeeper.allow could not be read, in plain words
    allow_command: str | None = None  # how to accept its open ports on the server itself


@dataclass(frozen=True, slots=True)
class ProjectRef:
    project_id: str
    project_name: str


@dataclass(frozen=True, slots=True)
class MailFooter:
    """What every mail says of who sent it (notify.scanner_info) and where answers go
    (notify.reply_to): a customer who sees the probes in their logs can tell them from an
    attack, and reach a person."""

    reply_to: str | None = None
    scanned_from: tuple[str, ...] = ()
    info_url: str | None = None
    contact: str | None = None
    next_check: str | None = None  # when the schedule scans again, as the customer reads it


def subject_prefix(environment: str, report: OwnerReport) -> str:
    """ "[stage] " outside production; "for <intended>: " on a mail sent to ops in its place.
    A customer in production reads no internal label (the X-Goalkeeper-* headers keep them)."""
    prefix = "" if environment == "prod" else f"[{environment}] "
    if report.redirected and report.intended:
        prefix += f"for {report.intended}: "
    return prefix


def frame_headers(
    headers: dict[str, str], environment: str, run_id: str, report: OwnerReport, footer: MailFooter
) -> dict[str, str]:
    """The headers every report and advisory carries beside `headers`."""
    headers |= {
        "Auto-Submitted": "auto-generated",  # RFC 3834: keeps vacation responders quiet
        "X-Goalkeeper-Environment": header_text(environment),
        "X-Goalkeeper-Run": header_text(run_id),
    }
    if footer.reply_to:
        headers["Reply-To"] = _single_address(footer.reply_to, "reply-to")
    if report.redirected and report.intended:
        headers["X-Goalkeeper-Intended-Recipient"] = header_text(report.intended)
    if report.not_found:
        headers["X-Goalkeeper-Owner"] = "NOT FOUND"
    return headers


def render_owner_report(  # noqa: PLR0913 (each keyword is one fact of the mail)
    report: OwnerReport,
    *,
    environment: str,
    run_id: str,
    sender: str,
    advice: Mapping[str, ServiceAdvice],
    generated_at: datetime,
    templates_dir: Path | None = None,
    max_exception_days: int = 180,
    footer: MailFooter = MailFooter(),
) -> OutgoingMail:
    """One multipart mail for one recipient, listing every exposed server and port."""
    recipient = _single_address(report.recipient, "recipient")
    _single_address(sender, "sender")
    if not report.findings:
        raise ValueError("a report mail needs at least one finding: it would say nothing true")
    # Anything not seen closed is exposed as far as anyone knows (an unmonitored finding in a
    # mail rerouted after the tick included): only RESOLVED is ever thanked for.
    # Acknowledged ones are open too, but accepted: listed apart, never counted as exposed.
    quiet = (FindingStatus.RESOLVED, FindingStatus.ACKNOWLEDGED)
    open_findings = [f for f in report.findings if f.status not in quiet]
    resolved = [f for f in report.findings if f.status == FindingStatus.RESOLVED]
    accepted = [f for f in report.findings if f.status == FindingStatus.ACKNOWLEDGED]
    services = sorted({f.service for f in open_findings})
    words = ExceptionWords(_aware(generated_at).astimezone(UTC).date(), max_exception_days)
    context: dict[str, Any] = {
        "environment": environment,
        "run_id": run_id,
        "generated_at": _when(generated_at),
        "recipient": recipient,
        "intended": report.intended,
        "redirected": report.redirected,
        "not_found": report.not_found,
        "owner": report.owner,
        "servers": _server_blocks(open_findings, advice, words),
        "resolved": _server_blocks(resolved, advice, words),
        "accepted": _server_blocks(accepted, advice, words),
        "max_exception_days": max_exception_days,
        "advice": [advice.get(service) or _fallback_advice(service) for service in services],
        "projects": sorted(
            {ProjectRef(f.target.project_id, f.target.project_name) for f in report.findings},
            key=lambda p: (p.project_name, p.project_id),
        ),
        "headline": headline(open_findings, advice),
        "open_count": len(open_findings),
        "resolved_count": len(resolved),
        "server_count": len({_server_key(f) for f in open_findings}),
        "resolved_server_count": len({_server_key(f) for f in resolved}),
        "latent": latent_blocks(report.latent),  # DESIGN §8's advisories (latent_section)
        "footer": footer,
    }
    env = _environment(templates_dir)
    prefix = subject_prefix(environment, report)
    subject = header_text(prefix + env.get_template("subject.txt.j2").render(context))
    headers = frame_headers(
        {"Date": format_datetime(_aware(generated_at))}, environment, run_id, report, footer
    )
    return OutgoingMail(
        recipient=recipient,
        sender=sender,
        subject=subject,
        text=env.get_template("report.txt.j2").render(context),
        html=env.get_template("report.html.j2").render(context),
        message_id=message_id(run_id, report.key or recipient, sender),
        headers=headers,
    )


def to_mime(mail: OutgoingMail) -> EmailMessage:
    """The mail as multipart/alternative; headers are checked again, whoever built `mail`."""
    message = EmailMessage(policy=SMTP)
    message["From"] = _single_address(mail.sender, "sender")
    message["To"] = _single_address(mail.recipient, "recipient")
    message["Subject"] = header_text(mail.subject)
    message["Message-ID"] = header_text(mail.message_id).replace(" ", "")
    for name, value in mail.headers.items():
        if name.lower() in _RESERVED_HEADERS or not name.isascii() or not _is_token(name):
            raise ValueError(f"header {name!r} may not be set on a report mail")
        message[name] = header_text(value)
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


@functools.lru_cache(maxsize=8)
def _environment(templates_dir: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("goalkeeper.notify", "templates")]
    if templates_dir is not None:
        loaders.insert(0, jinja2.FileSystemLoader(templates_dir))
    environment = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    # Customer names may hold line breaks meant to fake lines of our own text.
    environment.filters["oneline"] = _oneline
    environment.filters["code"] = code_html
    return environment


def code_html(value: object) -> Markup:
    """Text with `backticked` words as <code>, everything else escaped: for the HTML part."""
    parts = header_text(str(value), limit=4000).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code, just the text
        return escape("`".join(parts))
    return Markup("").join(
        Markup("<code>{}</code>").format(part) if index % 2 else escape(part)
        for index, part in enumerate(parts)
    )


def headline(findings: Sequence[Finding], advice: Mapping[str, ServiceAdvice]) -> str:
    """The subject when a service answers without a password (the worst grade leads):
    "Unauthenticated Redis on 2 servers"; "" when none does."""
    worst = [f for f in findings if f.grade is Grade.UNAUTHENTICATED]
    if not worst:
        return ""
    by_service: dict[str, set[tuple[str, str, str, str, str]]] = defaultdict(set)
    for finding in worst:
        by_service[finding.service].add(_server_key(finding))
    service = max(sorted(by_service), key=lambda s: len(by_service[s]))
    known = advice.get(service)
    label = (known.label if known else "") or service
    servers = len({_server_key(f) for f in worst})
    others = len(by_service) - 1
    more = f" and {others} more service{'s' if others != 1 else ''}" if others else ""
    rest = len(findings) - len(worst)
    tail = f"; {rest} more dangerous open port{'s' if rest != 1 else ''}" if rest else ""
    return f"Unauthenticated {label}{more} on {servers} server{'s' if servers != 1 else ''}{tail}"


def _oneline(value: object) -> str:
    return header_text(str(value), limit=300)


def _server_blocks(
    findings: Sequence[Finding], advice: Mapping[str, ServiceAdvice], words: ExceptionWords
) -> list[ServerBlock]:
    shared = rule_ports(findings)
    groups: dict[tuple[str, str, str, str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[_server_key(finding)].append(finding)
    blocks = []
    for (region, server_id, name, project_id, project_name), members in groups.items():
        # Worst first (DESIGN §7): what answers without a password leads.
        members.sort(key=lambda f: (grade_rank(f.grade), f.address, f.protocol, f.port))
        allow_problem, command = words.server_texts(members)
        blocks.append(
            ServerBlock(
                name=name or "(unnamed server)",
                server_id=server_id,
                project_name=project_name,
                project_id=project_id,
                region=region,
                addresses=tuple(dict.fromkeys(str(f.address) for f in members)),
                ports=tuple(
                    PortLine(
                        address=str(f.address),
                        port=f.port,
                        protocol=str(f.protocol),
                        service=f.service,
                        title=(advice.get(f.service) or _fallback_advice(f.service)).title,
                        first_seen=f.first_seen.strftime("%Y-%m-%d"),
                        new=f.status == FindingStatus.NEW,
                        evidence=f.evidence,
                        grade=str(f.grade or ""),
                        cause=cause_text(f, shared),
                        accepted=(texts := words.port_texts(f))[0],
                        exception_note=texts[1],
                    )
                    for f in members
                ),
                allow_problem=allow_problem,
                allow_command=command,
            )
        )
    return sorted(
        blocks,
        key=lambda b: (min(grade_rank(p.grade) for p in b.ports), b.project_name, b.region,
                       b.name, b.addresses),
    )  # fmt: skip


def _server_key(finding: Finding) -> tuple[str, str, str, str, str]:
    target = finding.target
    # Without a server id, the address is the only thing that tells two servers apart; server
    # ids are Nova's, so one region's does not tell its servers from another region's.
    server_id = target.server_id or f"address:{finding.address}"
    return (target.region, server_id, target.server_name, target.project_id, target.project_name)


def _fallback_advice(service: str) -> ServiceAdvice:
    return ServiceAdvice(
        service=service,
        title=service,
        exposed=f"A {service} service answers on this port to anyone on the Internet.",
        risk=(
            "Automated scanners find such services within hours; an exposed service can be "
            "broken into, have its data stolen or be abused to attack others."
        ),
        fix=(
            "Allow the port only from the addresses that need it, in the server's security "
            "group or its firewall.",
            "If nothing outside the server needs the service, bind it to 127.0.0.1 or a "
            "private address, or stop it.",
        ),
    )


@functools.lru_cache(maxsize=4096)  # each mail's addresses are checked twice, the sender always
def _single_address(value: str, role: str) -> str:
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in value):
        raise ValueError(f"the {role} address contains control characters")
    parsed = getaddresses([value])
    if len(parsed) != 1 or "@" not in parsed[0][1]:
        raise ValueError(f"the {role} is not exactly one e-mail address")
    return value


def _is_token(name: str) -> bool:
    return bool(name) and all(char.isalnum() or char == "-" for char in name)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(moment: datetime) -> str:
    return _aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
