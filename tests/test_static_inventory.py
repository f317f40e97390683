"""The static inventory file: address and network entries, owners, and the allowed-networks rule."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from goalkeeper import configsources
from goalkeeper.config import ConfigError
from goalkeeper.inventory.static import StaticInventory, read_static_targets
from goalkeeper.validity import static_inventory_problems
from goalkeeper.yamlfile import key_path

ALLOWED = (ip_network("127.77.0.0/16"), ip_network("fd00:77::/64"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return path


def test_address_and_network_entries_expand_with_their_owner(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
targets:
  - address: 127.77.0.10
    server_name: web-1
    project_id: p1
    owner_name: ACME Ltd
    owner_email: admin@acme.example
  - network: 127.77.1.0/30
    server_name: pool
    project_id: p2
""",
    )
    targets = read_static_targets(path, allowed=ALLOWED)
    # A /30's first and last addresses are its network and broadcast: not servers.
    assert [str(t.address) for t in targets] == ["127.77.0.10", "127.77.1.1", "127.77.1.2"]
    assert targets[0].owner.email == "admin@acme.example"
    assert targets[0].owner.name == "ACME Ltd"
    assert targets[1].owner.known is False  # no e-mail: NOT FOUND, goes to ops
    assert {t.server_name for t in targets[1:]} == {"pool"}


@pytest.mark.parametrize(
    ("network", "addresses"),
    [
        ("127.77.2.0/24", [f"127.77.2.{n}" for n in range(1, 255)]),  # not .0, not .255
        ("127.77.2.8/29", [f"127.77.2.{n}" for n in range(9, 15)]),
        ("127.77.2.4/30", ["127.77.2.5", "127.77.2.6"]),
        ("127.77.2.6/31", ["127.77.2.6", "127.77.2.7"]),  # point-to-point: both are hosts
        ("127.77.2.9/32", ["127.77.2.9"]),
        ("fd00:77::100/126", [f"fd00:77::10{n}" for n in range(4)]),  # no broadcast in IPv6
    ],
)
def test_a_network_entry_skips_its_network_and_broadcast_addresses(
    tmp_path: Path, network: str, addresses: list[str]
) -> None:
    path = write(tmp_path, f"targets:\n  - {{network: {network}, server_name: pool}}\n")
    targets = read_static_targets(path, allowed=ALLOWED)
    assert [str(t.address) for t in targets] == addresses


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "targets:\n  - {address: 127.77.0.1}\n  - {address: 203.0.113.5, server_name: stray}\n",
            "targets[1]: 203.0.113.5 (stray) is outside scan.allowed_networks",
        ),
        ("targets:\n  - {network: 127.76.255.252/29}\n", "targets[0]: not a CIDR network"),
        (
            "targets:\n  - {network: 127.77.255.248/29}\n  - {network: 127.76.0.0/15}\n",
            "targets[1]: 127.76.0.0/15",
        ),
        ("targets:\n  - {address: nope}\n", "targets[0]: not an IP address"),
        ("targets:\n  - {server_name: x}\n", "give exactly one of address or network"),
        ("targets:\n  - {address: 127.77.0.1, colour: red}\n", "targets[0].colour"),
        (
            "targets:\n  - {address: 127.77.0.1, owner_email: 'a@b\\r\\nBcc: c@d'}\n",
            "targets[0].owner_email",
        ),
    ],
)
def test_bad_entries_are_named(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_static_targets(write(tmp_path, text), allowed=ALLOWED, strict=True)
    assert any(expected in str(p) for p in caught.value.problems), caught.value.problems


def test_an_unusable_owner_email_in_a_tick_is_not_found_with_the_reason(tmp_path: Path) -> None:
    # Edited after the config check: the tick goes on, that owner's report goes to ops.
    path = write(
        tmp_path,
        "targets:\n"
        '  - {address: 127.77.0.1, owner_email: "ma\\u202Elory@acme.example"}\n'
        "  - {address: 127.77.0.2, owner_email: ops@beta.example}\n",
    )
    bad, good = read_static_targets(path, allowed=ALLOWED)
    assert not bad.owner.known and bad.owner.email is None
    assert bad.owner.address_problem is not None
    assert "'ma\\u202elory@acme.example'" in bad.owner.address_problem
    assert "RIGHT-TO-LEFT OVERRIDE" in bad.owner.address_problem
    assert good.owner.mail_key == "ops@beta.example"


OVERLAP = """
targets:
  - {network: 127.77.0.0/30, server_name: pool, owner_name: ACME, owner_email: admin@acme.example}
  - {address: 127.77.0.2, server_name: web-2, owner_name: %s, owner_email: %s}
"""


def test_one_address_with_two_owners_is_an_error_naming_both_entries(tmp_path: Path) -> None:
    path = write(tmp_path, OVERLAP % ("Beta", "ops@beta.example"))
    with pytest.raises(ConfigError) as caught:
        read_static_targets(path, allowed=ALLOWED)
    (problem,) = caught.value.problems
    assert problem.key == "targets[1]"
    assert "127.77.0.2 listed in targets[0] (127.77.0.0/30, pool) and targets[1] " in str(problem)
    assert "ACME <admin@acme.example> and Beta <ops@beta.example>" in str(problem)


def test_two_owned_and_not_owned_entries_for_one_address_are_two_owners(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "targets:\n  - {address: 127.77.0.1, owner_email: a@acme.example}\n"
        "  - {address: 127.77.0.1}\n",
    )
    with pytest.raises(ConfigError, match="two owners"):
        read_static_targets(path, allowed=ALLOWED)


def test_the_same_owner_twice_is_a_warning_and_the_address_entry_wins(tmp_path: Path) -> None:
    path = write(tmp_path, OVERLAP % ("ACME", "Admin@ACME.example"))
    warnings: list[str] = []
    targets = read_static_targets(path, allowed=ALLOWED, warn=warnings.append)
    assert [str(t.address) for t in targets] == ["127.77.0.1", "127.77.0.2"]
    assert {str(t.address): t.server_name for t in targets}["127.77.0.2"] == "web-2"
    (warning,) = warnings
    assert "127.77.0.2 listed twice, in targets[0] (127.77.0.0/30, pool) and targets[1] " in warning
    assert "same owner" in warning


def test_check_config_exits_2_for_two_owners_and_warns_for_one(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "inventory: {source: static, static_file: inventory.yaml}\n"
        "scan: {allowed_networks: [127.77.0.0/16], allow_loopback: true}\n"
    )
    write(tmp_path, OVERLAP % ("Beta", "ops@beta.example"))
    run = [sys.executable, "-m", "goalkeeper", "--config", str(cfg), "check-config"]
    two = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert two.returncode == 2
    assert "targets[0] (127.77.0.0/30, pool) and targets[1] (127.77.0.2, web-2)" in two.stderr
    write(tmp_path, OVERLAP % ("ACME", "admin@acme.example"))
    one = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert one.returncode == 0, one.stderr
    assert "warning: " in one.stderr and "listed twice" in one.stderr


def test_config_check_finds_the_file_next_to_the_config(tmp_path: Path) -> None:
    write(tmp_path, "targets:\n  - {address: 198.51.100.20, server_name: outside}\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "inventory: {source: static, static_file: inventory.yaml}\n"
        "scan: {allowed_networks: [127.77.0.0/16], allow_loopback: true}\n"
    )
    settings = configsources.load(cfg, environ={})
    problems = static_inventory_problems(settings, cfg)
    assert len(problems) == 1
    assert "198.51.100.20 (outside) is outside scan.allowed_networks" in str(problems[0])


def test_missing_static_file_is_a_config_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("inventory: {source: static, static_file: gone.yaml}\n")
    problems = static_inventory_problems(configsources.load(cfg, environ={}), cfg)
    assert [str(p) for p in problems] == [f"{tmp_path / 'gone.yaml'}: file not found"]


async def test_static_source_rereads_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "targets:\n  - {address: 127.77.0.1}\n")
    source = StaticInventory(path, allowed=ALLOWED)
    assert [t.address for t in (await source.fetch()).targets] == [ip_address("127.77.0.1")]
    path.write_text("targets:\n  - {address: 127.77.0.2}\n")
    assert [t.address for t in (await source.fetch()).targets] == [ip_address("127.77.0.2")]


def test_ipv6_addresses_and_small_networks_are_targets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
targets:
  - address: 127.77.0.10
  - address: fd00:77::10
    server_name: web-1-v6
  - network: fd00:77::100/126
""",
    )
    targets = read_static_targets(path, allowed=ALLOWED)
    assert [str(t.address) for t in targets] == [
        "127.77.0.10",
        "fd00:77::10",
        "fd00:77::100",
        "fd00:77::101",
        "fd00:77::102",
        "fd00:77::103",
    ]
    assert targets[1].server_name == "web-1-v6"


@pytest.mark.parametrize(
    ("entry", "limit", "expected"),
    [
        (
            "{network: fd00:77::/64, server_name: pool}",
            256,
            "targets[1]: fd00:77::/64 has 18446744073709551616 addresses, more than an IPv6 "
            "network entry may stand for (256, inventory.static_max_ipv6_network)",
        ),
        (
            "{network: fd00:77::/119}",
            256,
            "targets[1]: fd00:77::/119 has 512 addresses, more than an IPv6 network entry may "
            "stand for (256",
        ),
        ("{network: fd00:77::/126}", 2, "targets[1]: fd00:77::/126 has 4 addresses"),
        (
            "{address: 'fd00:99::1', server_name: stray}",
            256,
            "targets[1]: fd00:99::1 (stray) is outside scan.allowed_networks",
        ),
    ],
)
def test_an_ipv6_network_too_large_or_outside_is_an_error_naming_the_entry(
    tmp_path: Path, entry: str, limit: int, expected: str
) -> None:
    path = write(tmp_path, f"targets:\n  - {{address: 127.77.0.1}}\n  - {entry}\n")
    with pytest.raises(ConfigError) as caught:
        read_static_targets(path, allowed=ALLOWED, max_ipv6_network=limit)
    assert expected in str(caught.value)


def test_the_ipv6_network_limit_comes_from_the_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "targets:\n  - {network: fd00:77::/120}\n")
    assert len(read_static_targets(path, allowed=ALLOWED)) == 256  # the default: a /120
    with pytest.raises(ConfigError, match=r"inventory\.static_max_ipv6_network"):
        read_static_targets(path, allowed=ALLOWED, max_ipv6_network=255)


@pytest.mark.parametrize(
    ("loc", "key"),
    [
        (("targets", 3, "network"), "targets[3].network"),
        (("notify", "email", "port"), "notify.email.port"),
        (("scan", "ports", "7"), "scan.ports[7]"),  # a location read back as text
        ((), ""),
    ],
)
def test_a_validation_location_reads_as_the_key_written(
    loc: tuple[int | str, ...], key: str
) -> None:
    assert key_path(loc) == key
