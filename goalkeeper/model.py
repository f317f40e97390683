"""The nouns every layer shares: targets, owners, ports, scan results, findings, reports.

Plain frozen values and the small Protocols that mark the pipeline's seams. Nothing here does
I/O, reads the clock or imports an outside library: every other module may import this one.
Past 300 lines: it is the shared vocabulary, one small frozen value after another.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol, TypeAlias

from goalkeeper.exceptions import Acknowledgement, Allowance
from goalkeeper.firewall import PortFirewall

IPAddress: TypeAlias = IPv4Address | IPv6Address


class Transport(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True, slots=True, order=True)
class PortSpec:
    """One dangerous port to look for, and the service the catalog knows it as."""

    port: int
    protocol: Transport
    service: str

    @property
    def key(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who pays for a project. Without a usable e-mail address they are NOT FOUND.

    Owners from outside data are made by mailaddress.customer_owner, which leaves `email` None
    and says why in `address_problem` when the address given cannot be mailed to.
    """

    name: str | None = None
    email: str | None = None
    client_id: str | None = None
    address_problem: str | None = None

    @property
    def mail_key(self) -> str | None:
        """The address to write to, normalised; None when there is none that can be used."""
        return self.email.lower() if self.email and self.address_problem is None else None

    @property
    def known(self) -> bool:
        return self.mail_key is not None


UNKNOWN_OWNER = Owner()


@dataclass(frozen=True, slots=True)
class Target:
    """One public address of one customer server, as the inventory sees it."""

    address: IPAddress
    server_name: str = ""
    server_id: str = ""
    project_id: str = ""
    project_name: str = ""
    owner: Owner = UNKNOWN_OWNER
    firewall: PortFirewall | None = None  # None: not known (a static inventory, an old copy)
    # The server's own goalkeeper.allow (DESIGN §9): what it accepts, or why it cannot be read.
    allow: Allowance | None = None
    allow_problem: str | None = None
    region: str = ""  # the OpenStack region it was read from ("": one region, or static)


class OwnerLookupState(enum.StrEnum):
    ON = "on"  # billing is read
    OFF = "off"  # switched off on purpose (inventory.fleio.enabled: false)
    UNCONFIGURED = "unconfigured"  # nobody set Fleio up, nobody switched it off


@dataclass(frozen=True, slots=True)
class OwnerLookup:
    """How well billing named the owners of the inventory's projects in one refresh.

    An incident when owners are not configured, or when billing resolved an owner (one that
    can be mailed) for none of the inventory's projects or for less than `min_share` of them:
    a join that broke, a token for the wrong Fleio. Owners switched off on purpose are none.
    """

    state: OwnerLookupState
    projects: int = 0  # distinct projects in the inventory
    resolved: int = 0  # of those, with an owner that can be mailed
    listed: int = 0  # projects billing listed, the inventory's or not
    min_share: float = 0.5

    @property
    def share(self) -> float | None:
        return self.resolved / self.projects if self.projects else None

    @property
    def incident(self) -> bool:
        if self.state is OwnerLookupState.UNCONFIGURED:
            return True
        if self.state is OwnerLookupState.OFF or not self.projects:
            return False
        return self.resolved == 0 or self.resolved / self.projects < self.min_share

    def describe(self) -> str:
        """One plain sentence for the summary and the logs."""
        if self.state is OwnerLookupState.OFF:
            return "off by choice (inventory.fleio.enabled: false): every owner is NOT FOUND"
        if self.state is OwnerLookupState.UNCONFIGURED:
            return (
                "Fleio is not configured (inventory.fleio.url and its token are unset): every "
                "owner is NOT FOUND; set them, or inventory.fleio.enabled: false to choose this"
            )
        listed = f"it listed {self.listed}" if self.listed else "it listed none"
        text = f"Fleio resolved owners for {self.resolved} of {self.projects} projects ({listed})"
        if self.incident:
            text += (
                f", below the minimum share of {self.min_share:.0%}"
                " (inventory.fleio.min_resolved_share): their mail goes to ops as NOT FOUND"
            )
        return text


@dataclass(frozen=True, slots=True)
class Inventory:
    """Every target the inventory source knows, and when it was read."""

    targets: tuple[Target, ...]
    fetched_at: datetime
    source: str
    stale_reason: str | None = None  # set when this is the last good copy after a failed refresh
    owners: OwnerLookup | None = None  # None: the source carries its own owners (static)
    # Regions that could not be read this time, and why (their targets: the last good copy).
    regions_down: Mapping[str, str] = field(default_factory=dict)


class Grade(enum.StrEnum):
    """What service verification proved of an open port (DESIGN §7), worst first."""

    UNAUTHENTICATED = "unauthenticated"  # handed over data or control without a credential
    REACHABLE = "reachable"  # answers, but asks for credentials, or no check can tell
    UNCONFIRMED = "unconfirmed"  # accepts connections; the expected service did not answer

    @property
    def rank(self) -> int:
        """0 for the worst grade: sort by it to put the worst first."""
        return _GRADE_RANK[self]


_GRADE_RANK = {Grade.UNAUTHENTICATED: 0, Grade.REACHABLE: 1, Grade.UNCONFIRMED: 2}
UNGRADED_RANK = 3  # not verified (verification off, or a finding stored before it existed)


def parse_grade(grade: str | None) -> Grade | None:
    """A stored grade as a Grade; None for none, or for a word this version does not know."""
    try:
        return Grade(grade) if grade is not None else None
    except ValueError:
        return None


def grade_rank(grade: str | None) -> int:
    """The rank of a grade as stored (text), UNGRADED_RANK for none or an unknown word."""
    known = parse_grade(grade)
    return known.rank if known is not None else UNGRADED_RANK


@dataclass(frozen=True, slots=True)
class OpenPort:
    """A port nmap reported `open` on one address and, once verified, what it answered.

    `evidence` is one customer-safe line from verification (never nmap's port-table guess,
    never raw script output); empty while the port is not verified, as `grade` is None.
    """

    address: IPAddress
    port: int
    protocol: Transport
    evidence: str = ""
    grade: Grade | None = None


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What one scan stage learned. A host is either scanned (clean or not) or not scanned.

    `skipped` names the ports that were asked for but probed on no host (UDP without raw
    sockets), and why: a scanned host says nothing of them, so nothing on them can be closed.
    """

    scanned: frozenset[IPAddress]
    open_ports: tuple[OpenPort, ...]
    not_scanned: Mapping[IPAddress, str] = field(default_factory=dict)  # address -> why
    skipped: Mapping[tuple[int, Transport], str] = field(default_factory=dict)  # port -> why
    failed_batches: int = 0
    nmap_runs: int = 0
    warnings: tuple[str, ...] = ()

    def merged(self, later: ScanResult) -> ScanResult:
        """This scan and a later one of other hosts, as one."""
        return ScanResult(
            scanned=self.scanned | later.scanned,
            open_ports=(*self.open_ports, *later.open_ports),
            not_scanned={**self.not_scanned, **later.not_scanned},
            skipped={**self.skipped, **later.skipped},
            failed_batches=self.failed_batches + later.failed_batches,
            nmap_runs=self.nmap_runs + later.nmap_runs,
            warnings=tuple(dict.fromkeys((*self.warnings, *later.warnings))),
        )

    def only_for(self, addresses: frozenset[IPAddress]) -> ScanResult:
        """What this scan learned of `addresses` alone (a batch's counts are kept)."""
        return dataclasses.replace(
            self,
            scanned=self.scanned & addresses,
            open_ports=tuple(p for p in self.open_ports if p.address in addresses),
            not_scanned={a: why for a, why in self.not_scanned.items() if a in addresses},
        )


class FindingStatus(enum.StrEnum):
    NEW = "new"
    OPEN = "open"
    RESOLVED = "resolved"
    # Open when last seen, and not looked at since (port off the list, host not scanned, ...):
    # never "resolved", never thanked for; open again as soon as a scan sees it open.
    UNMONITORED = "unmonitored"
    # Open, and covered by a valid exception (DESIGN §9): sends nothing of its own, listed as
    # accepted when a report goes out anyway; open again once the exception ends.
    ACKNOWLEDGED = "acknowledged"


# Why a finding is UNMONITORED. Each stored reason starts with one of these (a detail may follow:
# nmap's words for a host, which scope rule); they label goalkeeper_unmonitored_findings.
PORT_REMOVED = "port no longer on the scan list"
UDP_SKIPPED = "UDP not scanned (scan.privileged: false)"
HOST_NOT_SCANNED = "host not scanned"
OUT_OF_SCOPE = "address out of scope"
NOT_IN_INVENTORY = "address no longer in the inventory"
UNMONITORED_REASONS = (PORT_REMOVED, UDP_SKIPPED, HOST_NOT_SCANNED, OUT_OF_SCOPE, NOT_IN_INVENTORY)


def unmonitored_kind(reason: str) -> str:
    """The reason without its detail: one of UNMONITORED_REASONS, or "other" (a bounded label)."""
    return next((kind for kind in UNMONITORED_REASONS if reason.startswith(kind)), "other")


@dataclass(frozen=True, slots=True)
class Finding:
    """One open dangerous port on one address, joined with what the inventory knows of it.

    `grade` and `evidence` come from service verification (DESIGN §7), `cause` from root-cause
    tracing (§8).
    """

    address: IPAddress
    port: int
    protocol: Transport
    service: str
    target: Target
    first_seen: datetime
    last_seen: datetime
    status: FindingStatus = FindingStatus.NEW
    evidence: str = ""
    grade: Grade | None = None
    cause: str | None = None
    unmonitored_reason: str | None = None  # why it is UNMONITORED
    acknowledged: Acknowledgement | None = None  # the exception that covers it (ACKNOWLEDGED)
    ended: Acknowledgement | None = None  # the exception that covered it until this tick
    not_honoured: str | None = None  # why an exception of the customer's does not silence it

    @property
    def key(self) -> tuple[str, int, str]:
        return (str(self.address), self.port, str(self.protocol))

    @property
    def owner(self) -> Owner:
        return self.target.owner


@dataclass(frozen=True, slots=True)
class ServiceAdvice:
    """The catalog's plain words for a customer: what is exposed, the risk, how to close it."""

    service: str
    title: str
    exposed: str
    risk: str
    fix: tuple[str, ...]
    label: str = ""  # its short name in a subject ("Redis"); the service's own name when empty


@dataclass(frozen=True, slots=True)
class LatentRuleAdvice:
    """One rule behind a latent exposure, in words and the commands that delete it."""

    group_name: str
    group_id: str
    rule_id: str
    allows: str  # what the rule lets in, e.g. "27017/tcp from 0.0.0.0/0"
    commands: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LatentAdvice:
    """A rule that admits the world to a dangerous port where nothing listens yet (DESIGN §8):
    told to the owner as an advisory, never a finding."""

    address: str
    port: int
    protocol: str
    service: str
    target: Target
    rules: tuple[LatentRuleAdvice, ...]


@dataclass(frozen=True, slots=True)
class OwnerReport:
    """Everything one recipient is told in one tick: one mail."""

    recipient: str  # where the mail actually goes
    intended: str | None  # the customer address it was meant for; None when NOT FOUND
    owner: Owner
    findings: tuple[Finding, ...]
    redirected: bool = False  # stage or customer mail off: sent to ops instead of `intended`
    key: str = ""  # who it is for, logically: the owner's address, or "not-found:<project id>"
    latent: tuple[LatentAdvice, ...] = ()  # advisories listed beside (or, alone, instead of) it

    @property
    def not_found(self) -> bool:
        return self.intended is None


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """A rendered mail, ready for SMTP. Headers are already safe; bodies are final."""

    recipient: str
    sender: str
    subject: str
    text: str
    html: str
    message_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


# Told the addresses an inventory will hold as soon as they are known, before the rest of it (so
# the scan can start while names and owners are still being read). Called at most once, maybe
# from another thread, and only with exactly the addresses of the inventory then returned.
AddressesKnown: TypeAlias = Callable[[frozenset[IPAddress]], None]


class InventorySource(Protocol):
    async def fetch(self, on_addresses: AddressesKnown | None = None) -> Inventory: ...


class Scanner(Protocol):
    async def scan(
        self, addresses: Sequence[IPAddress], ports: Sequence[PortSpec]
    ) -> ScanResult: ...


class Mailer(Protocol):
    async def send(self, mail: OutgoingMail) -> None: ...


class ChatNotifier(Protocol):
    async def send(
        self,
        text: str,
        *,
        parts_done: int = 0,
        on_part: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """Send `text` (in parts if long), skipping the first `parts_done` parts; after each
        part is accepted, await `on_part(parts accepted so far)`."""


class DeliveryError(Exception):
    """A message could not be delivered. `permanent` failures are never retried. `code` is the
    server's reply code when it gave one (an SMTP 550), so that a relay refusing everyone the
    same way can be told from addresses that are really wrong."""

    def __init__(self, reason: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True, slots=True)
class MailOutcome:
    """What became of one owner's mail in a tick."""

    recipient: str
    intended: str | None  # None: owner NOT FOUND
    owner_name: str | None
    findings: int
    message_id: str
    delivered: bool
    error: str | None = None
    subject: str = ""
    queued: bool = False  # handed to the e-mail worker; delivery happens after the tick


@dataclass(frozen=True, slots=True)
class TickReport:
    """Everything one tick did, for the CLI, the Telegram summary, logs and metrics."""

    run_id: str
    environment: str
    started_at: datetime
    finished_at: datetime
    inventory_source: str
    inventory_age_seconds: float
    inventory_stale_reason: str | None
    targets: int  # addresses handed to the scanner
    refused: tuple[str, ...]  # outside scan.allowed_networks: never scanned
    excluded: int  # inside scan.exclude: skipped on purpose
    hosts_scanned: int
    not_scanned: Mapping[str, str]  # address -> why
    findings: tuple[Finding, ...]
    resolved: tuple[Finding, ...] = ()
    unmonitored: tuple[Finding, ...] = ()  # open when last seen, not looked at this tick
    acknowledged: tuple[Finding, ...] = ()  # of `findings`, those an exception covers
    mails: tuple[MailOutcome, ...] = ()
    owners_not_found: tuple[str, ...] = ()  # projects whose owner billing does not know
    failed_batches: int = 0
    warnings: tuple[str, ...] = ()
    dry_run: bool = False
    summary_delivered: bool | None = None  # None: no chat configured, a dry run, or queued
    notification_failures: tuple[str, ...] = ()  # messages given up on since the last tick
    owner_lookup: OwnerLookup | None = None  # how billing resolved owners; None: static source
    latent_exposures: int = 0  # rules open to the world on scanned ports nothing answered on
    regions_down: Mapping[str, str] = field(default_factory=dict)  # region -> why not read
    # Targets in scope by region ("" when the inventory has no regions), for summary and metrics.
    targets_by_region: Mapping[str, int] = field(default_factory=dict)

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()
