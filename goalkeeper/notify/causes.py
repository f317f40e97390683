"""A finding's cause (DESIGN §8) in a customer's words: which rule lets the port through, the
exact commands that close it, and the same steps in the control panel.

Pure: a Finding's stored cause in, plain values out for the report templates. Commands come
only from goalkeeper.rootcause.close_commands (ids validated there); group names and prefixes
are customer text and are made one harmless line here (the HTML template escapes them too). It
never says more than the cause knows: an `unknown` cause gets no command.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from ipaddress import ip_network

from goalkeeper.model import Finding, LatentAdvice, LatentRuleAdvice
from goalkeeper.rootcause import Cause, CauseKind, MatchedRule, close_commands

NAME_LIMIT = 80  # a group name in a sentence


@dataclass(frozen=True, slots=True)
class CauseText:
    """What a report says of one port's cause: `reasons` (one sentence per rule, or one for
    no firewall), `commands` (lines for a code block, none when unknown) and `panel` (the
    control-panel steps in words)."""

    kind: CauseKind
    reasons: tuple[str, ...]
    commands: tuple[str, ...]
    panel: tuple[str, ...]


def rule_ports(findings: Iterable[Finding]) -> Counter[str]:
    """How many of these findings each rule lets through: a range or any-protocol rule may
    expose several ports of one mail, and each port's commands delete and re-create it."""
    return Counter(rule.rule_id for f in findings for rule in Cause.from_json(f.cause).rules)


def cause_text(finding: Finding, shared: Mapping[str, int] | None = None) -> CauseText:
    """The words and commands for `finding`'s stored cause (absent or unreadable: unknown).
    `shared` (from `rule_ports` over the same mail) adds a warning to a rule behind several."""
    cause = Cause.from_json(finding.cause)
    port, protocol = finding.port, finding.protocol
    where = f"{port}/{protocol}"
    if cause.kind == "port_security_disabled":
        return CauseText(
            kind=cause.kind,
            reasons=(
                f"Port security is turned off on this server's network port"
                f" (port id {_clean(cause.port_id)}): it has no firewall at all, so every"
                " service on this address can be reached from the Internet.",
            ),
            commands=tuple(close_commands(cause, port, protocol, finding.address.version)),
            panel=(
                "Turn port security back on for the port and attach a security group that"
                " allows only what you need (the commands above), or run a firewall on the"
                f" server itself (nftables, ufw, firewalld) that blocks {where} from the Internet.",
            ),
        )
    if cause.kind == "world_rule" and cause.rules:
        return CauseText(
            kind=cause.kind,
            reasons=tuple(_reason(rule, finding.address.version) for rule in cause.rules)
            + tuple(
                f"Rule {_clean(rule.rule_id)} also lets through {others} other"
                f" port{'s' if others > 1 else ''} listed in this mail: delete it once, and"
                " re-create only the ports you mean to keep open (the re-create commands below"
                " would open those ports again)."
                for rule in cause.rules
                if (others := (shared or {}).get(rule.rule_id, 1) - 1) > 0
            ),
            commands=tuple(close_commands(cause, port, protocol, finding.address.version)),
            panel=tuple(
                "In the control panel: Network → Security groups →"
                f" {_clean(rule.security_group_name) or rule.security_group_id} → delete the"
                f" rule allowing {_allows(rule)} from {_prefix(rule, finding.address.version)};"
                f" add one allowing {where} from your own address only"
                + ("." if _allows(rule) == where else ", and again the others you need.")
                for rule in cause.rules
            ),
        )
    return CauseText(
        kind="unknown",
        reasons=(
            "We could not tell which firewall rule lets this port through; our staff have been"
            " told and will look into it.",
        ),
        commands=(),
        panel=(),
    )


def _reason(rule: MatchedRule, family: int) -> str:
    name = _clean(rule.security_group_name) or "(no name)"
    return (
        f"Security group «{name}» (id {_clean(rule.security_group_id)}) rule"
        f" {_clean(rule.rule_id)} allows {_prefix(rule, family)} to {_allows(rule)}"
    )


def _allows(rule: MatchedRule) -> str:
    """What the rule opens, as `6379/tcp`, `5000-7000/tcp` or `every port and protocol`."""
    protocol = (rule.protocol or "").strip().lower()
    if protocol in ("", "any"):
        return "every port and protocol"
    low, high = rule.port_range_min, rule.port_range_max
    if low is None:
        return f"every {_clean(protocol)} port"
    ports = str(low) if high is None or high == low else f"{low}-{high}"
    return f"{ports}/{_clean(protocol)}"


def _prefix(rule: MatchedRule, family: int) -> str:
    """The rule's remote prefix written back from its parsed value (never the text as given)."""
    if rule.remote_ip_prefix is None:
        return "0.0.0.0/0 (any address)" if family == 4 else "::/0 (any address)"
    try:
        return str(ip_network(rule.remote_ip_prefix.strip(), strict=False))
    except ValueError:
        return "an address range we could not read"


def _clean(value: str) -> str:
    """One line, no control or format character (render.header_text's rule, which this module
    cannot import: render imports it), at most NAME_LIMIT characters."""
    if not value.isprintable():
        value = "".join(
            " " if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char
            for char in value
        )
    single = " ".join(value.split())
    return single if len(single) <= NAME_LIMIT else single[: NAME_LIMIT - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class LatentBlock:
    """One address's latent exposures as a report lists them: its ports in one line, and each
    rule once, with what it allows and the command that deletes it (DESIGN §8). Nothing
    listens on these ports, so no re-create command: a port nobody serves needs no access."""

    address: str
    server_name: str
    ports: tuple[str, ...]  # "27017/tcp mongodb"
    rules: tuple[LatentRuleAdvice, ...]


def latent_blocks(latent: Iterable[LatentAdvice]) -> list[LatentBlock]:
    """`latent` grouped by address, in the order given; a rule opening many ports appears once."""
    ports: dict[str, list[str]] = {}
    rules: dict[str, dict[str, LatentRuleAdvice]] = {}
    servers: dict[str, str] = {}
    for advice in latent:
        servers.setdefault(advice.address, advice.target.server_name)
        service = f" {advice.service}" if advice.service else ""
        ports.setdefault(advice.address, []).append(f"{advice.port}/{advice.protocol}{service}")
        for rule in advice.rules:
            # Its notes and re-create lines are about keeping a served port reachable: here
            # nothing is served, so only the delete; the template says what else it closes.
            deletes = tuple(c for c in rule.commands if c.startswith(_DELETE))
            kept = rules.setdefault(advice.address, {})
            kept.setdefault(rule.rule_id, replace(rule, commands=deletes))
    return [
        LatentBlock(address, servers[address], tuple(listed), tuple(rules[address].values()))
        for address, listed in ports.items()
    ]


_DELETE = "openstack security group rule delete "
