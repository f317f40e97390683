"""The shipped dangerous-port catalog is complete and valid; a broken one is refused whole."""

from __future__ import annotations

import pytest

from goalkeeper.model import Transport
from goalkeeper.scanning.catalog import CatalogError, load_catalog, parse_catalog

TCP, UDP = Transport.TCP, Transport.UDP


def service_for(port: int, protocol: Transport | str) -> str | None:
    services = {(spec.port, spec.protocol): spec.service for spec in load_catalog().ports}
    return services.get((port, Transport(protocol)))


# Every port the product promises to look for by default, and the service it is filed under.
REQUIRED = [
    (6379, TCP, "redis"),
    (27017, TCP, "mongodb"),
    (9200, TCP, "elasticsearch"),
    (9300, TCP, "elasticsearch"),
    (11211, TCP, "memcached"),
    (11211, UDP, "memcached"),
    (3306, TCP, "mysql"),
    (5432, TCP, "postgresql"),
    (1433, TCP, "mssql"),
    (1434, UDP, "mssql"),
    (7000, TCP, "cassandra"),
    (7001, TCP, "cassandra"),
    (7199, TCP, "cassandra"),
    (9042, TCP, "cassandra"),
    (9160, TCP, "cassandra"),
    (5984, TCP, "couchdb"),
    (2375, TCP, "docker"),
    (2379, TCP, "etcd"),
    (10250, TCP, "kubelet"),
    (3389, TCP, "rdp"),
    (5900, TCP, "vnc"),
    (445, TCP, "smb"),
    (137, UDP, "netbios"),
    (138, UDP, "netbios"),
    (139, TCP, "netbios"),
    (135, TCP, "msrpc"),
    (111, TCP, "rpcbind"),
    (111, UDP, "rpcbind"),
    (23, TCP, "telnet"),
    (21, TCP, "ftp"),
    (389, TCP, "ldap"),
    (389, UDP, "ldap"),
    (53, UDP, "dns"),
    (123, UDP, "ntp"),
    (161, UDP, "snmp"),
    (1900, UDP, "ssdp"),
    (5353, UDP, "mdns"),
    (10001, UDP, "ubiquiti"),
    (9306, TCP, "sphinx"),
    (9312, TCP, "sphinx"),
]

# Each service's advice must name the concrete setting that closes it, not just "use a firewall".
SPECIFIC_FIXES = {
    "redis": ("bind 127.0.0.1", "protected-mode yes", "requirepass"),
    "memcached": ("-l 127.0.0.1 -U 0",),
    "ntp": ("disable monitor", "restrict"),
    "dns": ("recursion",),
    "mongodb": ("bindIp", "authorization"),
    "docker": ("2375", "docker.sock"),
    "postgresql": ("listen_addresses", "pg_hba.conf"),
}


@pytest.mark.parametrize(("port", "protocol", "service"), REQUIRED)
def test_required_port_is_in_the_catalog(port: int, protocol: Transport, service: str) -> None:
    catalog = load_catalog()

    assert service_for(port, protocol) == service
    assert any(spec.key == f"{port}/{protocol}" for spec in catalog.ports)


def test_ports_are_sorted_unique_and_each_has_advice() -> None:
    catalog = load_catalog()

    keys = [(spec.port, spec.protocol) for spec in catalog.ports]
    assert list(catalog.ports) == sorted(catalog.ports)
    assert len(keys) == len(set(keys))
    assert {spec.service for spec in catalog.ports} == set(catalog.advice)


def test_every_advice_is_filled_in() -> None:
    for service, advice in load_catalog().advice.items():
        assert advice.service == service
        for text in (advice.title, advice.exposed, advice.risk):
            assert text.strip(), service
            assert "\n" not in text, service
        assert advice.fix, service
        assert all(step.strip() for step in advice.fix), service
        assert any("security group" in step for step in advice.fix), service


@pytest.mark.parametrize(("service", "words"), sorted(SPECIFIC_FIXES.items()))
def test_advice_is_specific(service: str, words: tuple[str, ...]) -> None:
    fix = " ".join(load_catalog().advice_for(service).fix)

    for word in words:
        assert word in fix


def test_unknown_service_gets_generic_advice_naming_it() -> None:
    advice = load_catalog().advice_for("acme-admin")

    assert advice.service == "acme-admin"
    assert "acme-admin" in advice.title
    assert "{service}" not in " ".join((advice.title, advice.exposed, advice.risk, *advice.fix))
    assert advice.fix


def test_unknown_port_has_no_service() -> None:
    assert service_for(6379, UDP) is None
    assert service_for(1, "tcp") is None


def test_catalog_is_loaded_once() -> None:
    assert load_catalog() is load_catalog()


ADVICE = """
    title: T
    exposed: E
    risk: R
    fix: [F]
"""
FALLBACK = "fallback:" + ADVICE


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        pytest.param(
            FALLBACK
            + "services:\n  a:\n    ports: [1/tcp]"
            + ADVICE
            + "  b:\n    ports: [1/tcp]"
            + ADVICE,
            ["services.b: 1/tcp is already listed under a"],
            id="a port under two services",
        ),
        pytest.param(
            FALLBACK + "services:\n  a:\n    ports: [1/tcp, 1/tcp]" + ADVICE,
            ["services.a: 1/tcp is already listed under a"],
            id="a port twice under one service",
        ),
        pytest.param(
            FALLBACK + "services:\n  a:\n    ports: [1/sctp, 70000/udp]" + ADVICE,
            [
                "services.a.ports[0]: '1/sctp' is not PORT/tcp or PORT/udp",
                "services.a.ports[1]: '70000/udp' is not PORT/tcp or PORT/udp",
            ],
            id="bad ports",
        ),
        pytest.param(
            FALLBACK + "services:\n  a:\n    ports: [1/tcp]\n    title: ''\n    fix: []\n",
            [
                "services.a.title: must be non-empty text",
                "services.a.exposed: must be non-empty text",
                "services.a.risk: must be non-empty text",
                "services.a.fix: must be a non-empty list of steps",
            ],
            id="advice missing: every field reported",
        ),
        pytest.param(
            "services:\n  a:\n    ports: [1/tcp]" + ADVICE + "    colour: red\n",
            [
                "fallback: must be a mapping with title, exposed, risk and fix",
                "services.a: unknown keys: colour",
            ],
            id="no fallback, unknown key",
        ),
        pytest.param("- a list", ["the top level must be a mapping"], id="not a mapping"),
    ],
)
def test_invalid_catalog_is_refused_with_every_problem(text: str, problems: list[str]) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, source="test.yaml")

    assert list(caught.value.problems) == problems
    assert str(caught.value).startswith("test.yaml: ")


def test_valid_catalog_parses() -> None:
    catalog = parse_catalog(
        FALLBACK + "services:\n  a:\n    ports: [2/udp, 1/tcp]" + ADVICE, source="test.yaml"
    )

    assert [spec.key for spec in catalog.ports] == ["1/tcp", "2/udp"]
    assert catalog.advice_for("a").fix == ("F",)
