"""Exceptions (DESIGN §9): what a customer or the provider has accepted, and for how long.

A customer accepts an exposure on the server itself, in the Nova metadata key `goalkeeper.allow`
(`PORT/PROTO[,PORT/PROTO...];until=YYYY-MM-DD;reason=TEXT`); the provider in config
(`exceptions:`, for an address, a network or a project). This module reads such a value into an
Allowance or says in plain words why it cannot (the words go back to that customer in their
next report), and decides whether one finding is acknowledged: within its until date, capped at
`notify.max_exception_days` from when it was first honoured, and never a customer's word over an
`unauthenticated` grade unless configured. Pure and at the bottom of the layers: no I/O, no
clock (today is an argument), no other goalkeeper module, so model.Target can carry its values.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal

METADATA_KEY = "goalkeeper.allow"
# Nova refuses metadata values over 255 characters; a static file is held to the same bound so
# a value that works there works on the cloud too.
MAX_VALUE_LENGTH = 255
UNAUTHENTICATED = "unauthenticated"  # the verification grade a customer may not silence alone
Source = Literal["customer", "provider"]
PortKey = tuple[int, str]  # (port, "tcp" | "udp"); model.Transport compares equal to these

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PROTOCOLS = ("tcp", "udp")
_KEYS = ("until", "reason")


class AllowValueError(ValueError):
    """A `goalkeeper.allow` value (or a provider exception's ports) that cannot be read; the
    message is plain words for the customer, naming what is wrong."""


@dataclass(frozen=True, slots=True)
class Allowance:
    """Ports accepted as open until a day (that whole day, UTC), and why."""

    ports: frozenset[PortKey]
    until: date
    reason: str
    source: Source = "customer"

    def covers(self, port: int, protocol: str) -> bool:
        return (port, str(protocol)) in self.ports

    def value(self) -> str:
        """The value as a customer writes it (ports in order)."""
        return f"{port_list(self.ports)};until={self.until.isoformat()};reason={self.reason}"


@dataclass(frozen=True, slots=True)
class ProviderException:
    """One entry of config's `exceptions:`: the allowance and what it applies to (exactly one
    of an address, a network or a project id)."""

    allowance: Allowance
    address: IPv4Address | IPv6Address | None = None
    network: IPv4Network | IPv6Network | None = None
    project_id: str | None = None

    def applies_to(self, address: IPv4Address | IPv6Address, project_id: str) -> bool:
        if self.address is not None:
            return address == self.address
        if self.network is not None:
            return address.version == self.network.version and address in self.network
        return bool(project_id) and project_id == self.project_id

    def describe(self) -> str:
        return str(self.address or self.network or f"project {self.project_id}")


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """Why a finding is acknowledged: whose exception, why, until when (`until` is capped;
    `requested_until` is what the exception asked for), and since when it has been honoured."""

    source: Source
    reason: str
    until: date
    requested_until: date
    since: datetime

    @property
    def capped(self) -> bool:
        return self.requested_until > self.until


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the exceptions say of one open finding: acknowledged (with why), or not, and then
    why a customer exception that covers it was not honoured (None: none covers it)."""

    acknowledged: Acknowledgement | None = None
    not_honoured: str | None = None


def parse_port(text: str) -> PortKey:
    """`53/udp` as (53, "udp"); raise AllowValueError saying what is wrong."""
    item = text.strip()
    number, slash, protocol = item.partition("/")
    if not slash:
        raise AllowValueError(f"{item!r} is not PORT/PROTOCOL, such as 53/udp")
    protocol = protocol.strip().lower()
    if protocol not in _PROTOCOLS:
        raise AllowValueError(f"the protocol in {item!r} is not tcp or udp")
    number = number.strip()
    if not number.isascii() or not number.isdigit():
        raise AllowValueError(f"{number!r} is not a port number")
    port = int(number)
    if not 1 <= port <= 65535:
        raise AllowValueError(f"port {port} is not between 1 and 65535")
    return (port, protocol)


def parse_ports(items: Iterable[str]) -> frozenset[PortKey]:
    ports = frozenset(parse_port(item) for item in items)
    if not ports:
        raise AllowValueError("no port is given: name at least one, such as 53/udp")
    return ports


def port_list(ports: Iterable[PortKey]) -> str:
    return ",".join(f"{port}/{protocol}" for port, protocol in sorted(ports))


def parse_allow(value: str, *, today: date | None = None) -> Allowance:
    """A `goalkeeper.allow` value as an Allowance; raise AllowValueError in plain words.

    With `today`, an until date already passed is an error too; without, the caller judges the
    date (a tick does, so that an exception that ran out is told apart from one never valid).
    """
    if len(value) > MAX_VALUE_LENGTH:
        raise AllowValueError(
            f"the value is {len(value)} characters long; at most {MAX_VALUE_LENGTH} are read"
        )
    ports_part, *parts = value.split(";")
    if not ports_part.strip():
        raise AllowValueError("it names no port: it starts with PORT/PROTOCOL, such as 53/udp")
    ports = parse_ports(item for item in ports_part.split(",") if item.strip())
    fields = _fields(parts)
    until = parse_until(fields["until"])
    if today is not None and until < today:
        raise AllowValueError(f"the date {until.isoformat()} has passed")
    return Allowance(ports=ports, until=until, reason=_reason(fields["reason"]))


def _fields(parts: Sequence[str]) -> dict[str, str]:
    """`until=...` and `reason=...`, each once, both there."""
    fields: dict[str, str] = {}
    for part in parts:
        key, equals, text = part.partition("=")
        key = key.strip().lower()
        if not equals:
            raise AllowValueError(
                f"{part.strip()!r} is not KEY=VALUE (a reason may not contain ';')"
            )
        if key not in _KEYS:
            raise AllowValueError(f"unknown key {key!r}: only until and reason are read")
        if key in fields:
            raise AllowValueError(f"{key} is given twice")
        fields[key] = text.strip()
    missing = [key for key in _KEYS if key not in fields]
    if missing:
        raise AllowValueError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: "
            "both until=YYYY-MM-DD and reason=TEXT are required"
        )
    return fields


def _reason(reason: str) -> str:
    if not reason:
        raise AllowValueError("the reason is empty: say why the port must stay open")
    if any(unicodedata.category(char).startswith("C") for char in reason):
        raise AllowValueError("the reason contains a control character")
    return reason


def parse_until(text: str) -> date:
    if not _DATE.fullmatch(text):
        raise AllowValueError(f"until {text!r} is not a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise AllowValueError(f"the date {text} is not a date") from None


def read_allow(value: str | None) -> tuple[Allowance | None, str | None]:
    """A server's metadata value: its allowance, or why it cannot be read (never raises)."""
    if value is None:
        return None, None
    try:
        return parse_allow(value), None
    except AllowValueError as err:
        return None, str(err)


def customer_may_silence(grade: str | None, *, acknowledge_unauthenticated: bool) -> bool:
    """Whether a customer's own exception may silence a finding of this verification grade
    (DESIGN §7): one that answers anyone without a password only if the provider allows it."""
    return grade != UNAUTHENTICATED or acknowledge_unauthenticated


@dataclass(frozen=True, slots=True)
class ExceptionPolicy:
    """What a tick honours: the provider's exceptions (config `exceptions:`), the cap on any
    until, and whether a customer may silence an `unauthenticated` finding."""

    provider: tuple[ProviderException, ...] = ()
    max_days: int = 180
    acknowledge_unauthenticated: bool = False


NO_EXCEPTIONS = ExceptionPolicy()


@dataclass(frozen=True, slots=True)
class Exposure:
    """One open port as the exceptions see it: where, what grade, and the server's own word."""

    address: IPv4Address | IPv6Address
    port: int
    protocol: str
    project_id: str = ""
    grade: str | None = None
    customer: Allowance | None = None  # the server's goalkeeper.allow


def judge(
    exposure: Exposure,
    *,
    policy: ExceptionPolicy,
    previous: Acknowledgement | None,
    now: datetime,
) -> Judgement:
    """Whether this open port is acknowledged now. The provider's word comes first.

    An allowance is honoured through its until day, but never past `policy.max_days` after the
    day it was first honoured (`previous.since`, kept while the finding stays acknowledged).
    """
    today = now.date()
    since = previous.since if previous is not None else now
    port, protocol = exposure.port, exposure.protocol
    for entry in policy.provider:
        allowance = entry.allowance
        if entry.applies_to(exposure.address, exposure.project_id) and allowance.covers(
            port, protocol
        ):
            ack = _acknowledgement(allowance, since=since, today=today, max_days=policy.max_days)
            if ack is not None:
                return Judgement(acknowledged=ack)
    customer = exposure.customer
    if customer is None or not customer.covers(port, protocol):
        return Judgement()
    if not customer_may_silence(
        exposure.grade, acknowledge_unauthenticated=policy.acknowledge_unauthenticated
    ):
        return Judgement(
            not_honoured="your goalkeeper.allow exception is not honoured for this port: the "
            "service answers anyone without a password, which no exception makes safe"
        )
    ack = _acknowledgement(customer, since=since, today=today, max_days=policy.max_days)
    if ack is None:
        # Told as "ended" by the lifecycle when it had acknowledged the port until now.
        why = f"your goalkeeper.allow exception ended on {customer.until.isoformat()}"
        return Judgement(not_honoured=why if previous is None else None)
    return Judgement(acknowledged=ack)


def _acknowledgement(
    allowance: Allowance, *, since: datetime, today: date, max_days: int
) -> Acknowledgement | None:
    cap = since.date() + timedelta(days=max_days)
    until = min(allowance.until, cap)
    if until < today:
        return None
    return Acknowledgement(
        source=allowance.source,
        reason=allowance.reason,
        until=until,
        requested_until=allowance.until,
        since=since,
    )
