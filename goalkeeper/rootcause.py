"""Root cause (DESIGN §8): which security-group rules let the scanner reach an open port.

Pure: it reads a port's PortFirewall (Neutron's own values, goalkeeper.firewall), decides, and
writes the `openstack` commands that close the port. No I/O, no clock, no outside library. It
must never put text from a customer on a command line: commands carry validated ids, numbers
and parsed prefixes only (`close_commands`). Past 300 lines: the matcher and the commands built
from its matches read a rule the same way (what any protocol, a range, a prefix mean), together.

When a rule admits the scanner (`rule_admits`):
- `direction` is ingress, and `ethertype` is the address's family (IPv4 / IPv6);
- `protocol` is any (None, "", "any") or the port's own, by name or IANA number as text
  ("tcp" / "6", "udp" / "17"), as Neutron accepts both;
- the port range is open (both bounds None) or covers the port. Neutron's API refuses a TCP or
  UDP rule with one bound set and not the other (openstack/neutron neutron/db/securitygroups_db.py,
  `_validate_port_range`: both bounds, min <= max, "when min/max are the same it is just a single
  port"); a rule stored another way with only `port_range_min` is read as that single port;
- `remote_ip_prefix` is None (with no `remote_group_id`: every address of the family), or covers
  one of the scanner's egress addresses of that family (`scan.egress_addresses`). When none of
  that family is configured, a prefix admits when it overlaps public address space (`PUBLIC`
  below: any prefix holding at least one global unicast address, 0.0.0.0/0 and ::/0 included);
- a rule with only `remote_group_id` admits the group's members, never the world.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal, Protocol, TypeAlias

from goalkeeper.firewall import PortFirewall, SecurityGroup, SecurityGroupRule
from goalkeeper.model import (
    Finding,
    IPAddress,
    LatentAdvice,
    LatentRuleAdvice,
    PortSpec,
    Target,
    Transport,
)

CauseKind: TypeAlias = Literal["world_rule", "port_security_disabled", "unknown"]
CAUSE_KINDS: tuple[CauseKind, ...] = ("world_rule", "port_security_disabled", "unknown")

_ANY_PROTOCOL = frozenset({"", "any"})
_PROTOCOL_NUMBERS = {Transport.TCP: "6", Transport.UDP: "17"}


def _public_space() -> tuple[IPv4Network | IPv6Network, ...]:
    """Global unicast space: IPv4 less IANA's special-purpose blocks that are not global
    (RFC 6890 and its updates), IPv6's 2000::/3 less the documentation prefixes."""
    not_global_v4 = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    ]  # fmt: skip
    return (
        *_less(IPv4Network("0.0.0.0/0"), [IPv4Network(n) for n in not_global_v4]),
        *_less(IPv6Network("2000::/3"), [IPv6Network("2001:db8::/32"), IPv6Network("3fff::/20")]),
    )


def _less(
    whole: IPv4Network | IPv6Network, holes: Sequence[IPv4Network | IPv6Network]
) -> list[IPv4Network | IPv6Network]:
    parts: list[IPv4Network | IPv6Network] = [whole]
    for hole in holes:
        next_parts: list[IPv4Network | IPv6Network] = []
        for part in parts:
            if hole.version == part.version and hole.subnet_of(part):  # type: ignore[arg-type]
                next_parts.extend(part.address_exclude(hole))  # type: ignore[arg-type]
            elif not part.subnet_of(hole):  # type: ignore[arg-type]
                next_parts.append(part)
        parts = next_parts
    return parts


PUBLIC = _public_space()


@dataclass(frozen=True, slots=True)
class MatchedRule:
    """One rule behind an exposure, in DESIGN §8's fields (Neutron's names and values)."""

    security_group_id: str
    security_group_name: str
    rule_id: str
    protocol: str | None
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None

    @classmethod
    def of(cls, group: SecurityGroup, rule: SecurityGroupRule) -> MatchedRule:
        return cls(
            security_group_id=group.id,
            security_group_name=group.name,
            rule_id=rule.id,
            protocol=rule.protocol,
            port_range_min=rule.port_range_min,
            port_range_max=rule.port_range_max,
            remote_ip_prefix=rule.remote_ip_prefix,
        )


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a port answers: the rules that admit the scanner (`world_rule`), no firewall at all
    (`port_security_disabled`, `port_id` says which port), or not known (`unknown`)."""

    kind: CauseKind
    rules: tuple[MatchedRule, ...] = ()
    port_id: str = ""

    def to_json(self) -> str:
        """The text Finding.cause holds: {"kind", "port_id", "rules": [DESIGN §8's fields]}."""
        return json.dumps(
            {"kind": self.kind, "port_id": self.port_id, "rules": [asdict(r) for r in self.rules]},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> Cause:
        """Finding.cause back; None, or text this module did not write, is `unknown`."""
        if not text:
            return UNKNOWN
        try:
            data = json.loads(text)
            kind = data["kind"]
            if kind not in CAUSE_KINDS:
                return UNKNOWN
            rules = tuple(MatchedRule(**rule) for rule in data["rules"])
            if not all(_well_typed(rule) for rule in rules):
                return UNKNOWN  # the store's text is read back with the types it was written with
            return cls(kind=kind, rules=rules, port_id=str(data.get("port_id", "")))
        except (ValueError, TypeError, KeyError, AttributeError):
            return UNKNOWN


UNKNOWN = Cause("unknown")


def _well_typed(rule: MatchedRule) -> bool:
    texts = (rule.security_group_id, rule.security_group_name, rule.rule_id)
    bounds = (rule.port_range_min, rule.port_range_max)
    return (
        all(isinstance(t, str) for t in texts)
        and all(isinstance(t, str | None) for t in (rule.protocol, rule.remote_ip_prefix))
        and all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in bounds)
    )


Egress: TypeAlias = Sequence[IPAddress]


def find_cause(
    address: IPAddress,
    port: int,
    protocol: Transport,
    firewall: PortFirewall | None,
    *,
    egress: Egress,
) -> Cause:
    """The cause of `port`/`protocol` answering on `address`, whose Neutron port is `firewall`."""
    if firewall is None:
        return UNKNOWN
    if not firewall.port_security_enabled:
        return Cause("port_security_disabled", port_id=firewall.port_id)
    rules: dict[str, MatchedRule] = {}
    for group in firewall.groups:
        for rule in group.rules:
            if rule.id not in rules and rule_admits(rule, address, port, protocol, egress=egress):
                rules[rule.id] = MatchedRule.of(group, rule)
    if not rules:
        return UNKNOWN
    return Cause("world_rule", tuple(rules.values()), port_id=firewall.port_id)


def rule_admits(
    rule: SecurityGroupRule,
    address: IPAddress,
    port: int,
    protocol: Transport,
    *,
    egress: Egress,
) -> bool:
    """Whether this one rule lets the scanner reach `port`/`protocol` on `address`."""
    return (
        rule.direction == "ingress"
        and rule.ethertype == f"IPv{address.version}"
        and protocol_matches(rule.protocol, protocol)
        and port_covered(rule.port_range_min, rule.port_range_max, port)
        and _remote_admits(rule, address.version, egress)
    )


def protocol_matches(rule_protocol: str | None, protocol: Transport) -> bool:
    if rule_protocol is None:
        return True
    text = rule_protocol.strip().lower()
    return text in _ANY_PROTOCOL or text in (str(protocol), _PROTOCOL_NUMBERS[protocol])


def port_covered(low: int | None, high: int | None, port: int) -> bool:
    if low is None and high is None:
        return True
    if low is None:
        return False  # Neutron refuses a max without a min: never matched rather than guessed
    return low <= port <= (low if high is None else high)


def _remote_admits(rule: SecurityGroupRule, version: int, egress: Egress) -> bool:
    if rule.remote_ip_prefix is None:
        return rule.remote_group_id is None
    ours = tuple(a for a in egress if a.version == version)
    return _prefix_admits(rule.remote_ip_prefix, version, ours)


# Cached: a cloud has few distinct prefixes, and latent tracing asks of each thousands of times.
@functools.lru_cache(maxsize=4096)
def _prefix_admits(text: str, version: int, ours: tuple[IPAddress, ...]) -> bool:
    try:
        prefix = ip_network(text.strip(), strict=False)
    except ValueError:
        return False
    if prefix.version != version:
        return False
    if ours:
        return any(a in prefix for a in ours)
    return any(p.version == version and prefix.overlaps(p) for p in PUBLIC)


class Looked(Protocol):
    """What a tick looked at: goalkeeper.lifecycle.Coverage is one."""

    def why_not(self, address: IPAddress, port: int, protocol: Transport) -> str | None: ...


@dataclass(frozen=True, slots=True)
class LatentExposure:
    """A catalog port the firewall opens to the scanner, on which this tick found nothing open:
    an advisory (DESIGN §8), never a finding."""

    address: IPAddress
    port: int
    protocol: Transport
    target: Target
    rules: tuple[MatchedRule, ...]
    service: str = ""

    @property
    def key(self) -> tuple[str, int, str]:
        return (str(self.address), self.port, str(self.protocol))


def latent_exposures(
    targets: Iterable[Target],
    findings: Iterable[Finding],
    catalog_ports: Sequence[PortSpec],
    *,
    egress: Egress,
    coverage: Looked,
) -> tuple[LatentExposure, ...]:
    """Every (address, catalog port) that a rule opens, that `coverage` says was scanned, and on
    which no finding is open. Ports without port security are findings' business, not this."""
    found = {f.key for f in findings}
    latent = []
    for target in targets:
        firewall = target.firewall
        if firewall is None or not firewall.port_security_enabled:
            continue
        for spec in catalog_ports:
            key = (str(target.address), spec.port, str(spec.protocol))
            looked = coverage.why_not(target.address, spec.port, spec.protocol) is None
            if key in found or not looked:
                continue
            cause = find_cause(target.address, spec.port, spec.protocol, firewall, egress=egress)
            if cause.kind == "world_rule":
                latent.append(
                    LatentExposure(
                        target.address, spec.port, spec.protocol, target, cause.rules, spec.service
                    )
                )
    return tuple(latent)


# Neutron's ids are UUIDs (8-4-4-4-12 hex); anything else never reaches a command line.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
CONTACT_US = "# We could not build this command safely: contact us and we will close it with you."


def valid_id(value: str) -> bool:
    return _UUID.fullmatch(value) is not None


def close_commands(cause: Cause, port: int, protocol: Transport, family: int) -> list[str]:
    """DESIGN §8's commands that close `port`/`protocol` to the world and open it to the
    customer's own address only; lines starting with `#` are notes, harmless when pasted."""
    if cause.kind == "port_security_disabled":
        return _enable_port_security(cause.port_id)
    commands: list[str] = []
    for rule in cause.rules:
        commands += _replace_rule(rule, port, protocol, family)
    return commands


def latent_advice(exposure: LatentExposure) -> LatentAdvice:
    """A latent exposure in words: per rule, what it allows and DESIGN §8's commands for it."""
    family = exposure.address.version
    rules = tuple(
        LatentRuleAdvice(
            group_name=rule.security_group_name,
            group_id=rule.security_group_id,
            rule_id=rule.rule_id,
            allows=allows(rule, family),
            commands=tuple(
                close_commands(
                    Cause("world_rule", (rule,)), exposure.port, exposure.protocol, family
                )
            ),
        )
        for rule in exposure.rules
    )
    return LatentAdvice(
        address=str(exposure.address),
        port=exposure.port,
        protocol=str(exposure.protocol),
        service=exposure.service,
        target=exposure.target,
        rules=rules,
    )


def allows(rule: MatchedRule, family: int) -> str:
    """What a rule lets in, in Neutron's terms: "27017/tcp from 0.0.0.0/0"."""
    protocol = rule.protocol
    if protocol is None or protocol.strip().lower() in _ANY_PROTOCOL:
        what = "every protocol and port"
    else:
        low, high = rule.port_range_min, rule.port_range_max
        low, high = (1, 65535) if low is None else (low, low if high is None else high)
        name = protocol.strip().lower()
        name = {"6": "tcp", "17": "udp"}.get(name, name)
        what = f"{_ports(low, high).replace(':', '-')}/{name}"
    remote = _remote(rule.remote_ip_prefix, family) or "(a prefix we could not read)"
    return f"{what} from {remote}"


def _enable_port_security(port_id: str) -> list[str]:
    if not valid_id(port_id):
        return [CONTACT_US]
    return [
        f"openstack port set --enable-port-security {port_id}",
        f"openstack port set --security-group <SECURITY-GROUP-ID> {port_id}",
    ]


def _replace_rule(rule: MatchedRule, port: int, protocol: Transport, family: int) -> list[str]:
    group_id, rule_id = rule.security_group_id, rule.rule_id
    if not (valid_id(group_id) and valid_id(rule_id)) or family not in (4, 6):
        return [CONTACT_US]
    ethertype, host = (f"IPv{family}", "32" if family == 4 else "128")
    create = f"openstack security group rule create --ingress --ethertype {ethertype}"
    lines = [
        f"openstack security group rule delete {rule_id}",
        f"{create} --protocol {protocol} --dst-port {port} --remote-ip <YOUR-ADDRESS>/{host}"
        f" {group_id}",
    ]
    if rule.protocol is None or rule.protocol.strip().lower() in _ANY_PROTOCOL:
        # Re-creating "every protocol but this port" would open more than it closes: say so.
        return [
            *lines,
            f"# Rule {rule_id} allowed every protocol and port: deleting it closes all of them;"
            " re-create only the ones you need, each limited to the addresses that need them.",
        ]
    low, high = rule.port_range_min, rule.port_range_max
    low, high = (1, 65535) if low is None else (low, low if high is None else high)
    remote = _remote(rule.remote_ip_prefix, family)
    if remote is None:
        return [
            *lines,
            f"# Rule {rule_id} allowed ports {_ports(low, high)}: re-create the others.",
        ]
    rest = [(low, port - 1), (port + 1, high)]
    kept = [
        f"{create} --protocol {protocol} --dst-port {_ports(a, b)} --remote-ip {remote} {group_id}"
        for a, b in rest
        if a <= b
    ]
    if kept:
        lines.append(
            f"# Rule {rule_id} allowed ports {_ports(low, high)}: deleting it closes all of them;"
            f" these keep the others open as they were (to {remote}):"
        )
    return lines + kept


def _ports(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}:{high}"


def _remote(prefix: str | None, family: int) -> str | None:
    """The rule's remote prefix, parsed and written back (never the text as given); None when
    it does not parse as one of `family` (such a rule never matches: see `_remote_admits`)."""
    if prefix is None:
        return "0.0.0.0/0" if family == 4 else "::/0"
    try:
        network = ip_network(prefix.strip(), strict=False)
    except ValueError:
        return None
    return str(network) if network.version == family else None
