"""The chart's values.schema.json: its `config` part is Settings, translated, and stays so.

The generator's output is compared with the committed file (a Settings change without
`make chart-schema` fails here), and its address patterns with what ipaddress reads. Helm
applying the schema to real values is tests/test_chart.py.
"""

from __future__ import annotations

import json
import random
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from goalkeeper import chartschema
from goalkeeper.config import password_url_keys, secret_keys

SCHEMA_FILE = Path(__file__).resolve().parents[1] / chartschema.SCHEMA_PATH


def test_committed_schema_is_the_generated_one() -> None:
    text = SCHEMA_FILE.read_text(encoding="utf-8")
    assert text == chartschema.render(chartschema.values_schema(json.loads(text))), (
        "values.schema.json is stale: run `make chart-schema`"
    )
    assert chartschema.main([str(SCHEMA_FILE), "--check"]) == 0


def test_check_fails_on_a_stale_file_and_writing_mends_it(tmp_path: Path) -> None:
    stale = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    stale["properties"]["config"] = {"type": "object"}
    path = tmp_path / "values.schema.json"
    path.write_text(json.dumps(stale), encoding="utf-8")
    assert chartschema.main([str(path), "--check"]) == 1
    assert chartschema.main([str(path)]) == 0
    assert path.read_text(encoding="utf-8") == SCHEMA_FILE.read_text(encoding="utf-8")


def test_the_chart_s_own_keys_are_kept_as_written() -> None:
    current = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    current["properties"]["image"] = {"type": "object", "title": "kept"}
    generated = chartschema.values_schema(current)
    assert generated["properties"]["image"] == {"type": "object", "title": "kept"}
    assert generated["additionalProperties"] is False


def objects_of(node: object) -> list[dict[str, object]]:
    if isinstance(node, list):
        return [found for item in node for found in objects_of(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if "properties" in node else []
    return found + [x for value in node.values() for x in objects_of(value)]


def test_every_section_refuses_unknown_keys_and_no_ref_is_left() -> None:
    schema = chartschema.config_schema()
    sections = objects_of(schema)
    assert len(sections) >= 10  # Settings and each nested model, PortEntry included
    assert all(section["additionalProperties"] is False for section in sections)
    assert "$ref" not in json.dumps(schema)
    assert "$defs" not in schema


def at(schema: dict[str, object], key: str) -> dict[str, object]:
    node: dict[str, object] = schema
    for part in key.split("."):
        properties = node["properties"]
        assert isinstance(properties, dict)
        node = properties[part]
    return node


def test_secrets_may_only_be_null_and_password_urls_hold_none() -> None:
    schema = chartschema.config_schema()
    assert secret_keys()  # found by type: every SecretStr field of Settings
    for key in secret_keys():
        leaf = at(schema, key)
        assert leaf["type"] == "null"
        assert "GOALKEEPER_" in str(leaf["description"])
    (url_key,) = password_url_keys()
    refused = re.compile(str(at(schema, url_key)["not"]["pattern"]))  # type: ignore[index]
    assert refused.search("postgresql+asyncpg://gk:pw@db/gk")
    assert refused.search("postgresql+asyncpg://gk:p/w@db/gk")
    assert not refused.search("postgresql+asyncpg://gk@db/gk")
    assert not refused.search("postgresql+asyncpg://gk:@db/gk")  # empty: no password
    assert not refused.search("sqlite+aiosqlite:////var/lib/goalkeeper/state.db")


def test_literal_fields_are_enums() -> None:
    schema = chartschema.config_schema()
    assert at(schema, "environment")["enum"] == ["stage", "prod"]
    assert at(schema, "logging.format")["enum"] == ["auto", "json", "console"]
    assert at(schema, "inventory.source")["enum"] == ["openstack", "static"]


def full(name: str) -> re.Pattern[str]:
    return re.compile(chartschema.PATTERNS[name])


def ipv6_spellings(address: IPv6Address) -> set[str]:
    spellings = {address.compressed, address.exploded}
    if address.ipv4_mapped is None:
        head = IPv6Address(int(address) & ~0xFFFFFFFF)
        tail = IPv4Address(int(address) & 0xFFFFFFFF)
        spellings.add(f"{head.exploded.rsplit(':', 2)[0]}:{tail}")
    return spellings


def test_network_patterns_accept_what_ipaddress_reads() -> None:
    rng = random.Random(17)
    v4, v6 = full("ipv4network"), full("ipv6network")
    for _ in range(2000):
        prefix4, prefix6 = rng.randint(0, 32), rng.randint(0, 128)
        net4 = IPv4Network((rng.getrandbits(32) >> (32 - prefix4) << (32 - prefix4), prefix4))
        zeros = rng.randint(0, 128)  # runs of zero groups, so "::" lands everywhere
        bits = rng.getrandbits(128) & ~((1 << zeros) - 1) & ((1 << 128) - 1)
        net6 = IPv6Network((bits >> (128 - prefix6) << (128 - prefix6), prefix6))
        assert v4.fullmatch(str(net4)), net4
        assert v4.fullmatch(str(net4.network_address))
        for spelling in ipv6_spellings(net6.network_address):
            assert IPv6Network(f"{spelling}/{prefix6}", strict=False)  # the spelling is valid
            assert v6.fullmatch(f"{spelling}/{prefix6}"), spelling
        assert full("ipv6").fullmatch(str(net6.network_address))
    for text in (
        "::",
        "::1",
        "1::",
        "fd00::/8",
        "2001:db8::/32",
        "::ffff:192.0.2.1",
        "10.0.0.0/255.0.0.0",
    ):
        assert v4.fullmatch(text) or v6.fullmatch(text), text
    assert v4.fullmatch("10.0.0.0/255.0.0.0")  # ipaddress takes a netmask too
    assert full("ipv6").fullmatch("fe80::1%eth0")


@pytest.mark.parametrize(
    "text",
    [
        "203.0.113.0/33",
        "203.0.113.0/",
        "256.0.0.0/8",
        "203.0.113.01",
        "203.0.113",
        "2001:db8::/129",
        "2001:db8:::1",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        "12345::",
        "example.com",
        "",
    ],
)
def test_network_patterns_refuse_what_ipaddress_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r".+"):  # for any reason
        IPv4Network(text) if "." in text and ":" not in text else IPv6Network(text)
    assert not full("ipv4network").fullmatch(text)
    assert not full("ipv6network").fullmatch(text)
