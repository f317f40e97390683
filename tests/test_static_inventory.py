"""The static inventory file: address and network entries, owners, and the allowed-networks rule."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from goalkeeper import config
from goalkeeper.config import ConfigError
from goalkeeper.inventory.static import (
    StaticInventory,
    read_static_targets,
    static_inventory_problems,
)

ALLOWED = (ip_network("127.77.0.0/16"),)


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
    assert [str(t.address) for t in targets] == [
        "127.77.0.10",
        "127.77.1.0",
        "127.77.1.1",
        "127.77.1.2",
        "127.77.1.3",
    ]
    assert targets[0].owner.email == "admin@acme.example"
    assert targets[0].owner.name == "ACME Ltd"
    assert targets[1].owner.known is False  # no e-mail: NOT FOUND, goes to ops
    assert {t.server_name for t in targets[1:]} == {"pool"}


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
        read_static_targets(write(tmp_path, text), allowed=ALLOWED)
    assert any(expected in str(p) for p in caught.value.problems), caught.value.problems


def test_config_check_finds_the_file_next_to_the_config(tmp_path: Path) -> None:
    write(tmp_path, "targets:\n  - {address: 198.51.100.20, server_name: outside}\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "inventory: {source: static, static_file: inventory.yaml}\n"
        "scan: {allowed_networks: [127.77.0.0/16], allow_loopback: true}\n"
    )
    settings = config.load(cfg, environ={})
    problems = static_inventory_problems(settings, cfg)
    assert len(problems) == 1
    assert "198.51.100.20 (outside) is outside scan.allowed_networks" in str(problems[0])


def test_missing_static_file_is_a_config_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("inventory: {source: static, static_file: gone.yaml}\n")
    problems = static_inventory_problems(config.load(cfg, environ={}), cfg)
    assert [str(p) for p in problems] == [f"{tmp_path / 'gone.yaml'}: file not found"]


async def test_static_source_rereads_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "targets:\n  - {address: 127.77.0.1}\n")
    source = StaticInventory(path, allowed=ALLOWED)
    assert [t.address for t in (await source.fetch()).targets] == [ip_address("127.77.0.1")]
    path.write_text("targets:\n  - {address: 127.77.0.2}\n")
    assert [t.address for t in (await source.fetch()).targets] == [ip_address("127.77.0.2")]
