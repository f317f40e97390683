"""The scope rules as tables: the nmap_arguments allowlist, the networks config accepts, and the
addresses that are never scanned whatever the networks say."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from goalkeeper import configsources
from goalkeeper.config import ConfigError, ScanSettings
from goalkeeper.model import Target
from goalkeeper.nmapargs import nmap_arguments_problems
from goalkeeper.scope import EXCLUDED, OUTSIDE, in_scope, refusal, select_targets, unscannable

ALLOWED_ARGUMENTS = [
    "-Pn",
    "-n",
    "--privileged",
    "--defeat-rst-ratelimit",
    "--defeat-icmp-ratelimit",
    *(f"-T{level}" for level in range(6)),
    "--max-retries 0",
    "--max-retries=10",
    "--host-timeout 10m",
    "--host-timeout=30s",
    "--max-rtt-timeout 500ms",
    "--min-rtt-timeout 100ms",
    "--initial-rtt-timeout 1.5s",
    "--scan-delay 100ms",
    "--max-scan-delay 2",
    "--host-timeout 1h",
    "-Pn -n -T4 --max-retries 1 --host-timeout 10m",  # the default
    "",
]


@pytest.mark.parametrize("arguments", ALLOWED_ARGUMENTS)
def test_every_allowed_option_with_a_valid_value_is_accepted(arguments: str) -> None:
    assert nmap_arguments_problems(arguments) == []
    assert ScanSettings(nmap_arguments=arguments).nmap_arguments == arguments


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ("-Pn -n 10.66.66.66", "'10.66.66.66'"),  # a bare target
        ("-Pn scanme.example", "'scanme.example'"),
        ("--iR 5", "'--iR'"),  # random Internet hosts
        ("-iR 5", "'-iR'"),
        ("-iL=/file", "'-iL=/file'"),
        ("--iL /file", "'--iL'"),
        ("-iL /etc/hosts", "'-iL'"),
        ("--excludefile /x", "'--excludefile'"),
        ("--exclude 10.0.0.1", "'--exclude'"),
        ("-sV", "'-sV'"),
        ("-sU", "'-sU'"),
        ("-p 1-65535", "'-p'"),
        ("-p-", "'-p-'"),
        ("--top-ports 10", "'--top-ports'"),
        ("-oN /tmp/out", "'-oN'"),
        ("--script vuln", "'--script'"),
        ("--script=vuln", "'--script=vuln'"),
        ("-A", "'-A'"),
        ("-R", "'-R'"),  # reverse DNS for every target
        ("--dns-servers 8.8.8.8", "'--dns-servers'"),
        ("--resume /x", "'--resume'"),
        ("--datadir /x", "'--datadir'"),
        ("-e eth0", "'-e'"),
        ("-6", "'-6'"),
        ("-T 4", "'-T'"),  # the level must be attached
        ("-T6", "'-T6'"),
        ("-max-retries 1", "'-max-retries'"),  # nmap's single-dash long form
        ("--max-retries", "--max-retries needs a count"),
        ("--max-retries x", "--max-retries needs a count"),
        ("--max-retries -1", "--max-retries needs a count"),
        ("--host-timeout 10 10.0.0.1", "'10.0.0.1'"),
        ("--host-timeout forever", "--host-timeout needs a time"),
        ("--scan-delay=", "--scan-delay needs a time"),
        ("--max-rate 5", "--max-rate may not be set here"),
        ("--min-hostgroup 4", "--min-hostgroup may not be set here"),
        ("-S 10.0.0.1", "-S may not be set here"),
        ("'-Pn -n'", "'-Pn -n'"),  # one quoted word is not two options
        ('-Pn "unclosed', "close the quote"),
    ],
)
def test_every_hostile_form_is_refused_by_name(arguments: str, named: str) -> None:
    found = "; ".join(nmap_arguments_problems(arguments))
    assert named in found, found
    with pytest.raises(ValueError, match="nmap_arguments"):
        ScanSettings(nmap_arguments=arguments)


def test_a_refused_argument_in_the_file_names_the_key_and_the_token(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("scan: {nmap_arguments: '-Pn -n --iR 5'}\n")
    with pytest.raises(ConfigError) as caught:
        configsources.load(path, environ={})
    (problem,) = caught.value.problems
    assert problem.key == "scan.nmap_arguments"
    assert "'--iR'" in problem.message


@pytest.mark.parametrize(
    ("scan", "expected"),
    [
        ({"allowed_networks": ["::ffff:127.91.0.0/112"]}, "IPv4-mapped"),
        ({"allowed_networks": ["::ffff:203.0.113.7"]}, "IPv4-mapped"),
        ({"allowed_networks": ["203.0.113.0/24"], "exclude": ["::ffff:203.0.113.7"]}, "mapped"),
        ({"allowed_networks": ["0.0.0.0/32"]}, "unspecified"),
        ({"allowed_networks": ["0.0.0.0/8"]}, "unspecified"),
        ({"allowed_networks": ["::/128"]}, "unspecified"),
        ({"allowed_networks": ["127.0.0.0/8"]}, "scan.allow_loopback"),
        ({"allowed_networks": ["::1"]}, "scan.allow_loopback"),
        ({"allowed_networks": ["224.0.0.0/4"]}, "multicast"),
        ({"allowed_networks": ["169.254.0.0/16"]}, "link-local"),
        ({"allowed_networks": ["fe80::/10"]}, "link-local"),
        ({"allowed_networks": ["0.0.0.0/0"]}, "scan.allow_whole_internet"),
        ({"allowed_networks": ["::/0"]}, "scan.allow_whole_internet"),
        ({"allowed_networks": ["0.0.0.0/1", "128.0.0.0/1"]}, "every IPv4 address (0.0.0.0/0)"),
    ],
)
def test_networks_that_cannot_be_meant_are_refused(scan: dict[str, object], expected: str) -> None:
    with pytest.raises(ValueError, match=r"allowed_networks|exclude") as caught:
        ScanSettings.model_validate(scan)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "scan",
    [
        {"allowed_networks": ["127.0.0.0/8", "::1"], "allow_loopback": True},
        {"allowed_networks": ["0.0.0.0/0", "::/0"], "allow_whole_internet": True},
        {"allowed_networks": ["203.0.113.0/24", "2001:db8::/32"], "exclude": ["203.0.113.9"]},
    ],
)
def test_networks_meant_as_written_are_accepted(scan: dict[str, object]) -> None:
    ScanSettings.model_validate(scan)


@pytest.mark.parametrize(
    ("address", "loopback", "why"),
    [
        ("::ffff:127.78.0.9", True, "IPv4-mapped"),
        ("::ffff:203.0.113.9", False, "IPv4-mapped"),
        ("0.0.0.0", False, "unspecified"),
        ("0.1.2.3", False, "0.0.0.0/8"),
        ("::", False, "unspecified"),
        ("127.0.0.1", False, "loopback"),
        ("127.91.0.1", False, "loopback"),
        ("::1", False, "loopback"),
        ("224.0.0.1", True, "multicast"),
        ("ff02::1", False, "multicast"),
        ("255.255.255.255", False, "broadcast"),
        ("169.254.169.254", False, "link-local"),
        ("fe80::1", False, "link-local"),
    ],
)
def test_addresses_that_are_never_scanned(address: str, loopback: bool, why: str) -> None:
    reason = unscannable(ip_address(address), loopback=loopback)
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("203.0.113.9", False),
        ("2001:db8::1", False),
        ("127.0.0.1", True),
        ("::1", True),
        ("2002:cb00:7109::1", False),  # 6to4 and NAT64 are plain IPv6 here (scope.py says so)
        ("64:ff9b::cb00:7109", False),
    ],
)
def test_ordinary_addresses_are_scannable(address: str, loopback: bool) -> None:
    assert unscannable(ip_address(address), loopback=loopback) is None


def target(address: str) -> Target:
    return Target(address=ip_address(address), server_name=f"srv-{address}")


def test_mapped_target_with_the_whole_ipv6_internet_allowed_is_refused_not_scanned() -> None:
    """::/0 contains ::ffff:127.78.0.9, and an IPv4 exclude of 127.78.0.9 would not see it."""
    allowed = [ip_network("::/0"), ip_network("127.78.0.0/16")]
    exclude = [ip_network("127.78.0.9/32")]
    targets = [target("::ffff:127.78.0.9"), target("127.78.0.9"), target("127.78.0.10")]
    selection = select_targets(targets, allowed=allowed, exclude=exclude, loopback=True)
    assert [str(t.address) for t in selection.targets] == ["127.78.0.10"]
    assert [str(t.address) for t in selection.excluded] == ["127.78.0.9"]
    assert [t.address for t in selection.refused] == [ip_address("::ffff:127.78.0.9")]
    assert "IPv4-mapped" in selection.why[ip_address("::ffff:127.78.0.9")]
    early = in_scope([t.address for t in targets], allowed=allowed, exclude=exclude, loopback=True)
    assert early == [ip_address("127.78.0.10")]


def test_unspecified_and_loopback_targets_are_refused_with_a_reason() -> None:
    allowed = [ip_network("0.0.0.0/0"), ip_network("::/0")]
    targets = [target("0.0.0.0"), target("127.0.0.1"), target("::1"), target("203.0.113.5")]
    selection = select_targets(targets, allowed=allowed, exclude=[])
    assert [str(t.address) for t in selection.targets] == ["203.0.113.5"]
    assert {str(a): why.split(":")[0] for a, why in selection.why.items()} == {
        "0.0.0.0": "the unspecified address or 0.0.0.0/8",
        "127.0.0.1": "a loopback address",
        "::1": "a loopback address",
    }


def test_refusal_names_outside_and_excluded() -> None:
    allowed = [ip_network("203.0.113.0/24")]
    exclude = [ip_network("203.0.113.9/32")]
    outcomes = {
        address: refusal(ip_address(address), allowed=allowed, exclude=exclude, loopback=False)
        for address in ("198.51.100.1", "203.0.113.9", "203.0.113.5")
    }
    assert outcomes == {"198.51.100.1": OUTSIDE, "203.0.113.9": EXCLUDED, "203.0.113.5": None}
