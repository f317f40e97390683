"""The goalkeeper.allow grammar and the exception rules of DESIGN §9, as tables.

Each way a value can be wrong has its own row, with the plain words the customer is told.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from ipaddress import ip_address, ip_network

import pytest

from goalkeeper.exceptions import (
    Acknowledgement,
    Allowance,
    AllowValueError,
    ExceptionPolicy,
    Exposure,
    ProviderException,
    customer_may_silence,
    judge,
    parse_allow,
    read_allow,
)

TODAY = date(2026, 12, 2)
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
ADDRESS = ip_address("198.51.100.10")


@pytest.mark.parametrize(
    ("value", "ports", "until", "reason"),
    [
        ("53/udp;until=2027-06-30;reason=public DNS", {(53, "udp")}, "2027-06-30", "public DNS"),
        (
            "53/udp,53/tcp;until=2027-06-30;reason=public DNS for our customers",
            {(53, "udp"), (53, "tcp")},
            "2027-06-30",
            "public DNS for our customers",
        ),
        (  # keys in either order, spaces and capitals forgiven
            " 6379/TCP , 11211/udp ; reason = cache for the lab ; until = 2027-01-01 ",
            {(6379, "tcp"), (11211, "udp")},
            "2027-01-01",
            "cache for the lab",
        ),
        (
            "65535/tcp;until=2026-12-02;reason=today is still valid",
            {(65535, "tcp")},
            "2026-12-02",
            "today is still valid",
        ),
        (
            "1/tcp,1/tcp;until=2027-01-01;reason=twice is once",
            {(1, "tcp")},
            "2027-01-01",
            "twice is once",
        ),
        ("53/udp;until=2027-01-01;reason=a=b, c", {(53, "udp")}, "2027-01-01", "a=b, c"),
    ],
)
def test_good_values(value: str, ports: set[tuple[int, str]], until: str, reason: str) -> None:
    allowance = parse_allow(value, today=TODAY)
    assert allowance == Allowance(frozenset(ports), date.fromisoformat(until), reason, "customer")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("53/udp;until=2027-13-01;reason=dns", "the date 2027-13-01 is not a date"),
        ("53/udp;until=2027-02-30;reason=dns", "the date 2027-02-30 is not a date"),
        ("53/udp;until=next year;reason=dns", "until 'next year' is not a date written YYYY-MM-DD"),
        ("53/udp;until=30.06.2027;reason=dns", "is not a date written YYYY-MM-DD"),
        ("53/udp;until=2025-01-01;reason=dns", "the date 2025-01-01 has passed"),
        ("53/udp;reason=dns", "until is missing"),
        ("53/udp;until=2027-01-01", "reason is missing"),
        ("53/udp", "until and reason are missing"),
        ("53/udp;until=2027-01-01;reason=", "the reason is empty"),
        ("53/udp;until=2027-01-01;reason=   ", "the reason is empty"),
        ("53/udp;until=2027-01-01;reason=a\nb", "the reason contains a control character"),
        ("53/udp;until=2027-01-01;reason=dns;owner=me", "unknown key 'owner'"),
        ("53/udp;until=2027-01-01;until=2027-02-01;reason=dns", "until is given twice"),
        ("53/udp;until=2027-01-01;reason=dns;reason=again", "reason is given twice"),
        ("53/udp;until=2027-01-01;reason=dns; see ticket", "'see ticket' is not KEY=VALUE"),
        ("0/tcp;until=2027-01-01;reason=x", "port 0 is not between 1 and 65535"),
        ("65536/tcp;until=2027-01-01;reason=x", "port 65536 is not between 1 and 65535"),
        ("-1/tcp;until=2027-01-01;reason=x", "'-1' is not a port number"),
        ("dns/udp;until=2027-01-01;reason=x", "'dns' is not a port number"),
        ("53/sctp;until=2027-01-01;reason=x", "the protocol in '53/sctp' is not tcp or udp"),
        ("53;until=2027-01-01;reason=x", "'53' is not PORT/PROTOCOL"),
        (";until=2027-01-01;reason=x", "it names no port"),
        (",;until=2027-01-01;reason=x", "no port is given"),
        ("", "it names no port"),
        ("53/udp;until=2027-01-01;reason=" + "x" * 250, "characters long; at most 255"),
        # An address is not part of the grammar (yet): a customer writing one is told so.
        ("2001:db8::53/udp;until=2027-01-01;reason=x", "'2001:db8::53' is not a port number"),
        ("[2001:db8::1]:53/udp;until=2027-01-01;reason=x", "is not a port number"),
        ("53/udp@fd00::1;until=2027-01-01;reason=x", "the protocol in '53/udp@fd00::1'"),
    ],
)
def test_each_way_a_value_can_be_wrong_is_said_in_plain_words(value: str, words: str) -> None:
    with pytest.raises(AllowValueError) as raised:
        parse_allow(value, today=TODAY)
    assert words in str(raised.value)


def test_without_today_a_past_date_is_read_and_left_to_the_tick() -> None:
    assert parse_allow("53/udp;until=2025-01-01;reason=dns").until == date(2025, 1, 1)


def test_read_allow_never_raises() -> None:
    assert read_allow(None) == (None, None)
    allowance, problem = read_allow("53/udp;until=2027-13-01;reason=dns")
    assert allowance is None
    assert problem == "the date 2027-13-01 is not a date"


@pytest.mark.parametrize(
    ("grade", "configured", "may"),
    [
        (None, False, True),  # not verified yet: the customer's word stands
        ("reachable", False, True),
        ("unconfirmed", False, True),
        ("unauthenticated", False, False),
        ("unauthenticated", True, True),
    ],
)
def test_a_customer_silences_an_unauthenticated_service_only_if_configured(
    grade: str | None, configured: bool, may: bool
) -> None:
    assert customer_may_silence(grade, acknowledge_unauthenticated=configured) is may


def allowance(until: str, *ports: tuple[int, str], source: str = "customer") -> Allowance:
    return Allowance(frozenset(ports or {(53, "udp")}), date.fromisoformat(until), "dns",
                     source)  # type: ignore[arg-type]  # fmt: skip


def provider(**where: object) -> ProviderException:
    return ProviderException(allowance("2027-06-30", (6379, "tcp"), source="provider"),
                             **where)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "address", "project", "applies"),
    [
        (provider(address=ADDRESS), ADDRESS, "p1", True),
        (provider(address=ADDRESS), ip_address("198.51.100.11"), "p1", False),
        (provider(network=ip_network("198.51.100.0/28")), ip_address("198.51.100.15"), "", True),
        (provider(network=ip_network("198.51.100.0/28")), ip_address("198.51.100.16"), "", False),
        (provider(network=ip_network("fd00::/64")), ip_address("fd00::1"), "", True),
        (provider(network=ip_network("fd00::/64")), ADDRESS, "", False),  # another family
        (provider(project_id="p1"), ADDRESS, "p1", True),
        (provider(project_id="p1"), ADDRESS, "p2", False),
        (provider(project_id="p1"), ADDRESS, "", False),
    ],
)
def test_a_provider_exception_matches_its_address_network_or_project(
    rule: ProviderException, address: object, project: str, applies: bool
) -> None:
    assert rule.applies_to(address, project) is applies  # type: ignore[arg-type]


def test_judge_acknowledges_within_until_and_caps_from_the_first_day() -> None:
    policy = ExceptionPolicy(max_days=180)
    far = Exposure(ADDRESS, 53, "udp", customer=allowance("2099-01-01"))
    first = judge(far, policy=policy, previous=None, now=NOW).acknowledged
    assert first == Acknowledgement("customer", "dns", TODAY + timedelta(days=180),
                                    date(2099, 1, 1), NOW)  # fmt: skip
    assert first.capped
    # The cap counts from when it was first honoured, not from each tick: it does not slide.
    later = NOW + timedelta(days=100)
    again = judge(far, policy=policy, previous=first, now=later).acknowledged
    assert again is not None and again.until == first.until and again.since == NOW
    after = judge(far, policy=policy, previous=first, now=NOW + timedelta(days=181))
    assert after.acknowledged is None and after.not_honoured is None  # the lifecycle says "ended"


@pytest.mark.parametrize(
    ("exposure", "acknowledged", "not_honoured"),
    [
        (Exposure(ADDRESS, 53, "udp", customer=allowance("2027-06-30")), True, None),
        (Exposure(ADDRESS, 53, "udp", customer=allowance("2026-12-02")), True, None),  # the day
        (Exposure(ADDRESS, 53, "tcp", customer=allowance("2027-06-30")), False, None),  # other port
        (Exposure(ADDRESS, 53, "udp"), False, None),  # no exception at all
        (
            Exposure(ADDRESS, 53, "udp", customer=allowance("2026-12-01")),
            False,
            "your goalkeeper.allow exception ended on 2026-12-01",
        ),
        (
            Exposure(ADDRESS, 53, "udp", grade="unauthenticated", customer=allowance("2027-06-30")),
            False,
            "answers anyone without a password",
        ),
    ],
)
def test_judge_a_customer_exception(
    exposure: Exposure, acknowledged: bool, not_honoured: str | None
) -> None:
    judgement = judge(exposure, policy=ExceptionPolicy(), previous=None, now=NOW)
    assert (judgement.acknowledged is not None) is acknowledged
    if not_honoured is None:
        assert judgement.not_honoured is None
    else:
        assert judgement.not_honoured is not None and not_honoured in judgement.not_honoured


def test_the_provider_silences_even_an_unauthenticated_service() -> None:
    exposure = Exposure(ADDRESS, 6379, "tcp", project_id="p1", grade="unauthenticated")
    policy = ExceptionPolicy(provider=(provider(project_id="p1"),))
    ack = judge(exposure, policy=policy, previous=None, now=NOW).acknowledged
    assert ack is not None and ack.source == "provider"
