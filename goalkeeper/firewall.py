"""What guards a Neutron port: its security groups and their rules, as plain frozen values.

The inventory fills these from Neutron; root-cause tracing reads them. Field names and values
are Neutron's own (Networking API v2.0, "Security group rules" and "Ports"), so nothing is
translated on the way in. No I/O, no outside library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class SecurityGroupRule:
    """One rule, as `GET /v2.0/security-group-rules` (or a group's `security_group_rules`)
    lists it. `protocol` is None for any protocol, else Neutron's text: a name (`tcp`, `udp`,
    `icmp`, ...) or an IANA number written as text (`"6"`). A None port bound is open-ended;
    `remote_ip_prefix` None with `remote_group_id` None admits every address of the family."""

    id: str
    security_group_id: str
    direction: Literal["ingress", "egress"]
    ethertype: Literal["IPv4", "IPv6"]
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None


@dataclass(frozen=True, slots=True)
class SecurityGroup:
    id: str
    name: str
    rules: tuple[SecurityGroupRule, ...] = ()


@dataclass(frozen=True, slots=True)
class PortFirewall:
    """The Neutron port behind a public address (a floating IP's internal port, or the port that
    holds a public fixed IP) and what filters it. With `port_security_enabled` false Neutron
    applies no security group at all, whatever `groups` lists."""

    port_id: str
    port_security_enabled: bool
    groups: tuple[SecurityGroup, ...] = ()
