"""From what a service answered to a grade and one line a customer may read (DESIGN §7).

Pure: the answers come in already parsed (goalkeeper.scanning.verify reads nmap's XML), the
catalog says which scripts run for a service and what it is called; this module only decides.
Evidence is written here, never copied: script output can hold a customer's data (database
names, keys, file lists), so it is counted or recognised, never pasted. nmap's port-table guess
(`method="table"`) is not an answer and never shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from goalkeeper.model import Grade, Transport

# nmap writes this script itself for an answer it cannot name; its text is raw service bytes,
# read only for a catalog's authentication markers and never shown.
FINGERPRINT_SCRIPT = "fingerprint-strings"


@dataclass(frozen=True, slots=True)
class ScriptAnswer:
    """One NSE script's result: its text, its top-level keyed values, and how many entries
    each top-level table (and the unkeyed top level, under "") holds."""

    output: str
    values: Mapping[str, str] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServiceAnswer:
    """What the verification run saw on one (address, port, protocol)."""

    state: str
    name: str = ""
    product: str = ""
    version: str = ""
    extrainfo: str = ""
    method: str = ""  # "probed": -sV heard it; "table": nmap's guess from the port number
    scripts: Mapping[str, ScriptAnswer] = field(default_factory=dict)

    @property
    def identified(self) -> bool:
        return self.method == "probed"


@dataclass(frozen=True, slots=True)
class ServiceCheck:
    """The catalog's verification entry for one service."""

    label: str  # how a customer knows it: "Redis"
    expect: str  # a regular expression over -sV's name and product
    scripts: tuple[str, ...] = ()
    auth_markers: tuple[str, ...] = ()  # words of an answer that asks for credentials
    refused: str = ""  # evidence when it answered but asked for credentials
    note: str = ""  # why no script runs, when none does


@dataclass(frozen=True, slots=True)
class Verdict:
    grade: Grade
    evidence: str


ScriptRule = Callable[[ScriptAnswer, ServiceAnswer, ServiceCheck], Verdict | None]


def grade_answer(
    check: ServiceCheck,
    protocol: Transport,
    answer: ServiceAnswer | None,
    *,
    failure: str | None = None,
) -> Verdict | None:
    """The grade and evidence of one open port; None when it is no finding at all (a UDP port
    whose service never answered). A failed or timed-out check keeps the finding, `reachable`."""
    if failure is not None:
        return Verdict(Grade.REACHABLE, f"port open; the {check.label} check did not finish "
                                        f"({failure})")  # fmt: skip
    if answer is None or answer.state != "open":
        if protocol is Transport.UDP:
            return None
        return Verdict(Grade.UNCONFIRMED, f"port open; no {check.label} reply")
    verdicts = [
        verdict
        for script in check.scripts
        if (found := answer.scripts.get(script)) is not None
        and (rule := SCRIPT_RULES.get(script)) is not None
        and (verdict := rule(found, answer, check)) is not None
    ]
    if (by_version := _VERSION_RULES.get(check.label)) is not None:
        verdicts += [v for v in (by_version(answer, check),) if v is not None]
    if verdicts:
        return min(verdicts, key=lambda v: v.grade.rank)
    return _by_answer(check, protocol, answer)


def _by_answer(check: ServiceCheck, protocol: Transport, answer: ServiceAnswer) -> Verdict | None:
    """The grade when no script or version rule decided: what -sV heard, if anything."""
    if _asked_for_credentials(answer, check):
        return Verdict(Grade.REACHABLE, check.refused or f"{check.label} answered: "
                                                         "authentication required")  # fmt: skip
    if answer.identified and _expected(answer, check):
        if check.refused and check.scripts and not set(check.scripts) & set(answer.scripts):
            return Verdict(Grade.REACHABLE, check.refused)  # its own check got nothing out
        return Verdict(Grade.REACHABLE, f"{_product(answer, check)} answered")
    if protocol is Transport.UDP:
        return None  # a UDP reply that is not this service's is no finding
    if answer.identified and answer.name == "tcpwrapped":
        return Verdict(
            Grade.UNCONFIRMED, f"port open; closed the connection, no {check.label} reply"
        )
    if answer.identified:
        return Verdict(
            Grade.UNCONFIRMED, f"port open; no {check.label} reply (answered as {answer.name})"
        )
    return Verdict(Grade.UNCONFIRMED, f"port open; no {check.label} reply")


def _expected(answer: ServiceAnswer, check: ServiceCheck) -> bool:
    return re.search(check.expect, f"{answer.name} {answer.product}", re.IGNORECASE) is not None


def _asked_for_credentials(answer: ServiceAnswer, check: ServiceCheck) -> bool:
    texts = [s.output for s in answer.scripts.values()] + [answer.extrainfo]
    return any(marker.lower() in t.lower() for marker in check.auth_markers for t in texts)


def _product(answer: ServiceAnswer, check: ServiceCheck) -> str:
    """What -sV named, with its version: "Redis key-value store 7.0.15"; the label if nothing."""
    return " ".join(filter(None, (answer.product or check.label, _safe(answer.version))))


_VERSION = re.compile(r"[0-9][0-9A-Za-z._+-]{0,31}")


def _safe(version: str) -> str:
    """A version number, or nothing: a version field can carry a banner's other words."""
    match = _VERSION.match(version.strip())
    return match[0] if match else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _redis(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    version = _safe(script.values.get("Version", ""))
    if version:
        return Verdict(Grade.UNAUTHENTICATED, f"Redis {version} answered `INFO` without a password")
    return None


def _mongodb_databases(
    script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck
) -> Verdict | None:
    if "databases" in script.counts:
        listed = _count(script.counts["databases"], "database")
        return Verdict(Grade.UNAUTHENTICATED, f"MongoDB listed {listed} without a password")
    return None


def _mongodb_info(
    script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck
) -> Verdict | None:
    if "Build info" in script.counts or "Server status" in script.counts:
        version = _safe(answer.version)
        return Verdict(Grade.REACHABLE, f"MongoDB {version} answered build info".replace("  ", " "))
    return None


def _memcached(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if script.values.get("Authentication", "no").lower().startswith("yes"):
        return Verdict(Grade.REACHABLE, "Memcached answered: authentication required")
    if "Process ID" in script.values or "Uptime" in script.values:
        version = " ".join(filter(None, ("Memcached", _safe(answer.version))))
        return Verdict(Grade.UNAUTHENTICATED, f"{version} answered `stats` without a password")
    return None


def _couchdb(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    listed = script.counts.get("", 0)
    if listed:
        return Verdict(
            Grade.UNAUTHENTICATED, f"CouchDB listed {_count(listed, 'database')} without a password"
        )
    return None


def _ftp_anon(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if script.output.startswith("Anonymous FTP login allowed"):
        return Verdict(Grade.UNAUTHENTICATED, "anonymous FTP login allowed")
    return None


def _rsync(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if "ERROR" in script.values or "ERROR" in script.output:
        return None
    modules = len(script.values) + sum(script.counts.values())
    if modules:
        return Verdict(Grade.UNAUTHENTICATED, f"rsync listed {_count(modules, 'module')} to anyone")
    return None


_VNC_NONE = re.compile(r"^\s+None \(1\)\s*$", re.MULTILINE)


def _vnc(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if _VNC_NONE.search(script.output):
        return Verdict(Grade.UNAUTHENTICATED, "VNC asks for no password (security type None)")
    if "Protocol version" in script.values:
        return Verdict(Grade.REACHABLE, "VNC answered and asks for a password")
    return None


def _x11(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if "access is granted" in script.output:
        return Verdict(Grade.UNAUTHENTICATED, "X11 server lets anyone connect to the display")
    return None


def _snmp(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if script.output.strip() and "ERROR" not in script.output:
        return Verdict(Grade.UNAUTHENTICATED, "SNMP answered the community name `public`")
    return None


def _dns(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if "Recursion appears to be enabled" in script.output:
        return Verdict(Grade.UNAUTHENTICATED, "DNS answered a recursive query for another domain")
    return None


def _ntp(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if "version" in script.values or "system" in script.values:
        return Verdict(Grade.UNAUTHENTICATED, "NTP answered a control (mode 6) query from anyone")
    if script.values:
        return Verdict(Grade.REACHABLE, "NTP answered a time request")
    return None


def _mysql(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    version = _safe(script.values.get("Version", ""))
    return Verdict(Grade.REACHABLE, f"MySQL {version} handshake") if version else None


def _mssql(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if script.output.strip():
        return Verdict(Grade.REACHABLE, f"{_product(answer, check)} answered")
    return None


def _rdp(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if "CredSSP (NLA): SUCCESS" in script.output:
        return Verdict(Grade.REACHABLE, "RDP answered; it requires NLA before a login screen")
    if "SUCCESS" in script.output:
        return Verdict(Grade.REACHABLE, "RDP answered without NLA: anyone gets a login screen")
    return None


def _smb(script: ScriptAnswer, answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if "SMBv1" in script.output:
        return Verdict(Grade.REACHABLE, "SMB answered, SMBv1 still enabled")
    if script.output.strip():
        return Verdict(Grade.REACHABLE, "SMB answered (SMBv2 or later)")
    return None


def _elasticsearch(answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if answer.identified and "cluster:" in answer.extrainfo:
        version = " ".join(filter(None, ("Elasticsearch", _safe(answer.version))))
        return Verdict(
            Grade.UNAUTHENTICATED,
            f"{version} answered `GET /` with its cluster name without a password",
        )
    return None


def _docker(answer: ServiceAnswer, check: ServiceCheck) -> Verdict | None:
    if answer.identified and "docker" in answer.product.lower():
        version = " ".join(filter(None, ("Docker API", _safe(answer.version))))
        return Verdict(Grade.UNAUTHENTICATED, f"{version} answered without TLS or credentials")
    return None


# Which scripts this module can read; the catalog may name no other (tests/test_catalog.py).
SCRIPT_RULES: Mapping[str, ScriptRule] = {
    "redis-info": _redis,
    "mongodb-databases": _mongodb_databases,
    "mongodb-info": _mongodb_info,
    "memcached-info": _memcached,
    "couchdb-databases": _couchdb,
    "ftp-anon": _ftp_anon,
    "rsync-list-modules": _rsync,
    "vnc-info": _vnc,
    "x11-access": _x11,
    "snmp-sysdescr": _snmp,
    "dns-recursion": _dns,
    "ntp-info": _ntp,
    "mysql-info": _mysql,
    "ms-sql-info": _mssql,
    "rdp-enum-encryption": _rdp,
    "smb-protocols": _smb,
}

# Services whose -sV answer alone proves access (no safe script exists), by catalog label.
_VERSION_RULES: Mapping[str, Callable[[ServiceAnswer, ServiceCheck], Verdict | None]] = {
    "Elasticsearch": _elasticsearch,
    "Docker API": _docker,
}
