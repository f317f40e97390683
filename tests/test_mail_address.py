"""The one e-mail address check (goalkeeper.mailaddress), as a table, and where it is applied.

Every address that reaches SMTP went through it: config (ops_email, sender), the static file,
Fleio's clients, and rows read back from the state store.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from goalkeeper import configsources
from goalkeeper.config import ConfigError
from goalkeeper.lifecycle import FindingRecord
from goalkeeper.mailaddress import checked_mail_address, customer_owner, mail_address_problem
from goalkeeper.model import Transport

USABLE = [
    ("admin@acme.example", "admin@acme.example"),
    ("Ops@Beta.EXAMPLE", "Ops@beta.example"),  # the domain is case-blind, the local part not
    ("first.last+tag@sub.customer.example", "first.last+tag@sub.customer.example"),
    ("info@bücher.example", "info@xn--bcher-kva.example"),  # IDN: sent in its ASCII form
    ("info@xn--bcher-kva.example", "info@xn--bcher-kva.example"),
]
UNUSABLE = [
    ("x\u00ad@a.example", "SOFT HYPHEN"),
    ("x@a\u00ad.example", "SOFT HYPHEN"),
    ("x\u202e@a.example", "RIGHT-TO-LEFT OVERRIDE"),
    ("x@a.exa\u202emple", "RIGHT-TO-LEFT OVERRIDE"),
    ("x\u200b@a.example", "ZERO WIDTH SPACE"),
    ("x@a\u200b.example", "ZERO WIDTH SPACE"),
    ("x\x00@a.example", "U+0000"),
    ("x@a.example\x00", "U+0000"),
    ("x@a.example\r\nBcc: y@b.example", "U+000D"),
    ("x\t@a.example", "invalid characters"),
    ("Name <x@a.example>", "display name"),
    ('"Name" <x@a.example>', "display name"),
    ("two@a.example, three@b.example", "invalid characters"),
    ("ü@a.example", "Internationalized characters before the @-sign"),  # needs SMTPUTF8
    ("no-at-sign", "@-sign"),
    ("x@localhost", "period"),
    ("x@[127.0.0.1]", "bracketed"),
    ("", "@-sign"),
]


@pytest.mark.parametrize(("text", "sent_as"), USABLE)
def test_usable_addresses_are_sent_in_their_normal_form(text: str, sent_as: str) -> None:
    assert checked_mail_address(text) == sent_as
    assert mail_address_problem(text) is None
    assert customer_owner("Someone", text).mail_key == sent_as.lower()


@pytest.mark.parametrize(("text", "why"), UNUSABLE)
def test_unusable_addresses_are_refused_saying_why_and_showing_the_text(
    text: str, why: str
) -> None:
    problem = mail_address_problem(text)
    assert problem is not None
    assert why.lower() in problem.lower()
    assert repr(text) in problem  # invisible characters are shown escaped, never raw
    with pytest.raises(ValueError, match="not a usable e-mail address"):
        checked_mail_address(text)


@pytest.mark.parametrize(("text", "why"), [u for u in UNUSABLE if u[0]])
def test_an_owner_with_an_unusable_address_is_not_found_with_the_reason(
    text: str, why: str
) -> None:
    owner = customer_owner("ACME", text, "7")
    assert not owner.known and owner.email is None and owner.mail_key is None
    assert owner.address_problem is not None and why.lower() in owner.address_problem.lower()
    assert owner.name == "ACME" and owner.client_id == "7"


def test_no_address_at_all_is_not_found_without_a_reason() -> None:
    for text in (None, "", "   "):
        owner = customer_owner("ACME", text)
        assert not owner.known and owner.address_problem is None


def test_a_stored_row_is_checked_again_when_read() -> None:
    # Written before the check existed: it must not reach SMTP as it is.
    now = datetime(2026, 12, 1, tzinfo=UTC)
    record = FindingRecord(
        IPv4Address("127.0.0.1"), 6379, Transport.TCP, "redis", now, now,
        owner_name="ACME", owner_email="x\u202e@a.example", owner_client_id="7",
    )  # fmt: skip
    assert not record.owner().known
    assert record.owner().address_problem is not None


@pytest.mark.parametrize("key", ["ops_email", "sender"])
@pytest.mark.parametrize("bad", ["sec\u200burity@provider.example", "sec\x00@provider.example"])
def test_a_bad_ops_address_is_a_config_error(tmp_path: Path, key: str, bad: str) -> None:
    value = bad if key == "ops_email" else f"Goalkeeper <{bad}>"
    path = tmp_path / "config.yaml"
    path.write_text(f"notify: {{{key}: {value!r}}}\n".replace("'", '"'))
    with pytest.raises(ConfigError) as caught:
        configsources.load(path, environ={})
    (problem,) = caught.value.problems
    assert problem.key == f"notify.{key}"
    assert "not a usable e-mail address" in problem.message


def test_a_bad_ops_address_from_the_environment_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("{}\n")
    with pytest.raises(ConfigError) as caught:
        configsources.load(
            path, environ={"GOALKEEPER_NOTIFY__OPS_EMAIL": "sec\u00adurity@p.example"}
        )
    assert any("SOFT HYPHEN" in p.message for p in caught.value.problems)


def test_check_config_exits_2_for_an_ops_address_with_an_invisible_character(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('notify: {ops_email: "security\\u202e@provider.example"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "goalkeeper", "--config", str(path), "check-config"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "notify.ops_email: " in result.stderr
    assert "'security\\u202e@provider.example'" in result.stderr
    assert "RIGHT-TO-LEFT OVERRIDE" in result.stderr
