"""The simulated cloud's security groups: what lets the world in, or why nothing filters at all.

Apart from world.py so that the firewall data has its own `random.Random`, seeded from the
world's seed: drawing it from the world's generator would move every address and listener a
seed gives, and with them every finding and mail other tests expect. It makes each case root
cause tracing must tell apart: a rule per service open to the world (0.0.0.0/0, or a null
prefix, which Neutron reads as any address), one range rule (6000-6999/tcp), a protocol-any
rule for IPv4 and IPv6, ports with port security off (no group applies), and one latent
exposure: a group opening MongoDB's 27017/tcp to the world on a server where nothing listens.
Pure, like world.py: no clock, no network.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from goalkeeper_sim.world import Port, Server

LATENT_PORT = 27017  # MongoDB, in the catalog; no listener ever plays it on the chosen server
_DISABLED_SHARE = 0.15  # of the servers with open services


@dataclass(frozen=True, slots=True)
class SecurityGroupRule:
    """One rule; `remote_ip_prefix` 0.0.0.0/0 on an ingress rule is what lets the world in."""

    id: str
    direction: Literal["ingress", "egress"]
    protocol: str | None
    port_min: int | None
    port_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None
    ethertype: Literal["IPv4", "IPv6"] = "IPv4"


@dataclass(frozen=True, slots=True)
class SecurityGroup:
    """A Neutron security group with its rules."""

    id: str
    name: str
    project_id: str
    rules: tuple[SecurityGroupRule, ...]


def add_firewalls(
    seed: int,
    groups: list[SecurityGroup],
    ports: dict[str, Port],
    servers: Sequence[Server],
    public: Sequence[str],
) -> None:
    """Shape `groups` and `ports` in place (the servers are already drawn); `public` are the
    ids of the servers with a public address, in the world's order."""
    rng = random.Random(f"{seed}/firewalls")
    public_ids = set(public)
    for index, group in enumerate(groups):
        if group.name == "default":
            groups[index] = _default(rng, group)
        elif group.name.startswith("allow-"):
            groups[index] = _reshape(rng, group)
    opened = [s for s in servers if s.services]
    disabled = rng.sample(opened, round(len(opened) * _DISABLED_SHARE)) if len(opened) > 2 else []
    for server in disabled:
        for port_id in server.port_ids:
            # Neutron refuses to turn port security off while a group is attached: none is.
            port = ports[port_id]
            ports[port_id] = dataclasses.replace(
                port, port_security_enabled=False, security_group_ids=()
            )
    by_id = {group.id: group for group in groups}
    off = {s.id for s in disabled}
    candidates = [
        s
        for s in servers
        if s.id in public_ids
        and s.id not in off
        and not any(_covers(r) for g in _groups_of(s, ports, by_id) for r in g.rules)
    ]
    if candidates:
        server = rng.choice(candidates)
        rule = SecurityGroupRule(
            _uuid(rng), "ingress", "tcp", LATENT_PORT, LATENT_PORT, "0.0.0.0/0", None
        )
        latent = SecurityGroup(_uuid(rng), "legacy-mongodb", server.project_id, (rule,))
        groups.append(latent)
        for port_id in server.port_ids:
            port = ports[port_id]
            ports[port_id] = dataclasses.replace(
                port, security_group_ids=(*port.security_group_ids, latent.id)
            )


def _default(rng: random.Random, group: SecurityGroup) -> SecurityGroup:
    """Neutron's `default` group: ingress from its own members, egress anywhere, both
    families, as the Networking API v2.0 reference's "List security groups" example response
    shows it (GET /v2.0/security-groups)."""
    members4, any4 = group.rules[0], group.rules[1]  # already drawn by world.py, kept as they are
    members6 = SecurityGroupRule(_uuid(rng), "ingress", None, None, None, None, group.id, "IPv6")
    any6 = SecurityGroupRule(_uuid(rng), "egress", None, None, None, None, None, "IPv6")
    return dataclasses.replace(group, rules=(members4, members6, any4, any6))


def _reshape(rng: random.Random, group: SecurityGroup) -> SecurityGroup:
    shape = rng.choice(("per-port", "per-port", "null-prefix", "range", "any"))
    first = group.rules[0]
    if shape == "null-prefix":
        rules = tuple(dataclasses.replace(r, remote_ip_prefix=None) for r in group.rules)
    elif shape == "range":
        rules = tuple(
            SecurityGroupRule(
                first.id if n == 0 else _uuid(rng),
                "ingress",
                protocol,
                max(1, min(r.port_min or 1 for r in same) // 1000 * 1000),
                min(65535, max(r.port_max or 1 for r in same) // 1000 * 1000 + 999),
                "0.0.0.0/0",
                None,
            )
            for n, (protocol, same) in enumerate(_by_protocol(group.rules).items())
        )
    elif shape == "any":
        any6 = SecurityGroupRule(_uuid(rng), "ingress", None, None, None, "::/0", None, "IPv6")
        any4 = SecurityGroupRule(first.id, "ingress", None, None, None, "0.0.0.0/0", None)
        rules = (any4, any6)
    else:
        rules = group.rules
    return dataclasses.replace(group, rules=rules)


def _by_protocol(
    rules: Sequence[SecurityGroupRule],
) -> dict[str | None, list[SecurityGroupRule]]:
    found: dict[str | None, list[SecurityGroupRule]] = {}
    for rule in rules:
        found.setdefault(rule.protocol, []).append(rule)
    return found


def _covers(rule: SecurityGroupRule) -> bool:
    """Whether `rule` already lets the world reach the latent port (so it would not be latent)."""
    if rule.direction != "ingress" or rule.remote_group_id is not None:
        return False
    if rule.protocol not in (None, "tcp"):
        return False
    low, high = rule.port_min or 1, rule.port_max or 65535
    return low <= LATENT_PORT <= high


def _groups_of(
    server: Server, ports: dict[str, Port], groups: dict[str, SecurityGroup]
) -> list[SecurityGroup]:
    return [groups[g] for p in server.port_ids for g in ports[p].security_group_ids]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
