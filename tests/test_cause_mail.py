"""A finding's cause in words (DESIGN §8): the mail's rule, commands and control-panel steps,
the Telegram summary's count per cause, and the by-cause gauge."""

from __future__ import annotations

import re
from dataclasses import replace
from email.message import EmailMessage

import pytest
from prometheus_client import generate_latest

from goalkeeper import metrics as metrics_module
from goalkeeper.metrics import Metrics
from goalkeeper.model import Finding
from goalkeeper.notify.summary import CAUSE_LIST_LIMIT, render_summary
from goalkeeper.rootcause import CAUSE_KINDS, CONTACT_US, Cause, MatchedRule
from goalkeeper.state.records import TickRecord
from goalkeeper_sim.telegram import parse_telegram_html
from tests.test_render import HOSTILE, customer_report, finding, parsed, render, tick

GROUP_ID = "5a1b2c3d-0000-4000-8000-00000000a001"
RULE_ID = "7e8f9a0b-0000-4000-8000-00000000b002"
PORT_ID = "9c8d7e6f-0000-4000-8000-00000000c003"


def world_rule(name: str = "web", **changes: object) -> Cause:
    rule = MatchedRule(
        security_group_id=GROUP_ID,
        security_group_name=name,
        rule_id=RULE_ID,
        protocol="tcp",
        port_range_min=6379,
        port_range_max=6379,
        remote_ip_prefix="0.0.0.0/0",
    )
    return Cause("world_rule", (replace(rule, **changes),), port_id=PORT_ID)  # type: ignore[arg-type]


def with_cause(cause: Cause | None, address: str = "203.0.113.5") -> Finding:
    redis = finding(address, 6379, "redis")
    return replace(redis, cause=None if cause is None else cause.to_json())


def bodies(f: Finding) -> tuple[str, str]:
    message = parsed(render(customer_report(f)))
    text_part, html_part = message.get_body(("plain",)), message.get_body(("html",))
    assert isinstance(text_part, EmailMessage)
    assert isinstance(html_part, EmailMessage)
    crlf = "\r\n"
    return text_part.get_content().replace(crlf, "\n"), html_part.get_content().replace(crlf, "\n")


def test_a_world_rule_is_named_with_its_commands_and_panel_steps() -> None:
    text, html_body = bodies(with_cause(world_rule()))
    reason = f"Security group «web» (id {GROUP_ID}) rule {RULE_ID} allows 0.0.0.0/0 to 6379/tcp"
    delete = f"openstack security group rule delete {RULE_ID}"
    create = (
        "openstack security group rule create --ingress --ethertype IPv4 --protocol tcp"
        f" --dst-port 6379 --remote-ip &lt;YOUR-ADDRESS&gt;/32 {GROUP_ID}"
    )
    panel = (
        "In the control panel: Network → Security groups → web → delete the rule allowing"
        " 6379/tcp from 0.0.0.0/0; add one allowing 6379/tcp from your own address only."
    )
    for body in (text, html_body):
        assert reason in body
        assert panel in body
    assert f"        {delete}\n" in text
    assert f"        {create.replace('&lt;', '<').replace('&gt;', '>')}\n" in text
    code = re.search(r"<pre[^>]*><code>(.*?)</code></pre>", html_body, re.S)
    assert code is not None
    assert code.group(1).splitlines() == [delete, create]


def test_a_range_or_any_protocol_rule_says_what_it_opens() -> None:
    ranged, _ = bodies(with_cause(world_rule(port_range_min=5000, port_range_max=7000)))
    assert "allows 0.0.0.0/0 to 5000-7000/tcp" in ranged
    anything, _ = bodies(
        with_cause(world_rule(protocol=None, port_range_min=None, port_range_max=None))
    )
    assert "allows 0.0.0.0/0 to every port and protocol" in anything
    open_family, _ = bodies(with_cause(world_rule(remote_ip_prefix=None)))
    assert "allows 0.0.0.0/0 (any address) to 6379/tcp" in open_family


@pytest.mark.parametrize("name", [HOSTILE, "web\nBcc: x", "<script>alert(1)</script>"])
def test_hostile_group_names_are_escaped_in_html_and_one_line_in_text(name: str) -> None:
    text, html_body = bodies(with_cause(world_rule(name)))
    assert "<script>" not in html_body
    assert not any(line.startswith(("Bcc:", "Cc:")) for line in text.splitlines())
    flat = " ".join(name.split())
    assert f"Security group «{flat}» (id {GROUP_ID})" in text
    assert f"Network → Security groups → {flat} → delete" in text
    # The name never reaches a command: only the validated ids do.
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("openstack")]
    assert commands and not any("script" in c or "Bcc" in c for c in commands)


def test_a_rule_id_that_is_not_a_uuid_gets_no_command() -> None:
    text, _ = bodies(with_cause(world_rule(rule_id="x; rm -rf /")))
    assert "rm -rf" not in "\n".join(
        line for line in text.splitlines() if line.strip().startswith("openstack")
    )
    assert CONTACT_US in text


def test_port_security_off_says_there_is_no_firewall_and_how_to_turn_it_on() -> None:
    text, html_body = bodies(with_cause(Cause("port_security_disabled", port_id=PORT_ID)))
    for body in (text, html_body):
        assert "Port security is turned off" in body
        assert "no firewall at all" in body
        assert f"openstack port set --enable-port-security {PORT_ID}" in body
        assert "firewall on the server itself" in body
    assert "security group rule delete" not in text


@pytest.mark.parametrize("stored", [None, Cause("unknown"), "not json {"])
def test_an_unknown_cause_prints_no_command(stored: Cause | str | None) -> None:
    f = with_cause(stored if isinstance(stored, Cause) else None)
    if isinstance(stored, str):
        f = replace(f, cause=stored)
    text, html_body = bodies(f)
    assert "openstack" not in text
    assert "<pre" not in html_body
    assert "our staff have been told and will look into it" in text
    assert "Security group «" not in text


def test_summary_counts_causes_and_lists_the_unknown_for_staff() -> None:
    findings = (
        with_cause(world_rule(), "203.0.113.1"),
        with_cause(Cause("port_security_disabled", port_id=PORT_ID), "203.0.113.2"),
        with_cause(None, "203.0.113.10"),
        with_cause(Cause("unknown"), "203.0.113.9"),
    )
    summary = render_summary(tick(findings))
    assert "Causes: world_rule: 1 · port_security_disabled: 1 · unknown: 2" in summary
    assert (
        "⚠️ <b>Cause unknown, for staff to look at: 2</b>:"
        " <code>203.0.113.9</code> 6379/tcp, <code>203.0.113.10</code> 6379/tcp"
    ) in summary
    parse_telegram_html(summary)


def test_summary_caps_the_unknown_list() -> None:
    findings = tuple(with_cause(None, f"203.0.113.{n}") for n in range(1, CAUSE_LIST_LIMIT + 6))
    summary = render_summary(tick(findings))
    line = next(x for x in summary.splitlines() if "Cause unknown" in x)
    assert line.count("<code>") == CAUSE_LIST_LIMIT
    assert line.endswith("<i>… and 5 more</i>")


def test_summary_without_findings_has_no_cause_line() -> None:
    assert "Causes:" not in render_summary(tick(()))


def test_by_cause_gauge_reads_zero_at_start_and_replaces_its_counts() -> None:
    metrics = Metrics()
    assert metrics_module.CAUSE_KINDS == CAUSE_KINDS
    text = generate_latest(metrics.registry).decode()
    for kind in CAUSE_KINDS:
        assert f'goalkeeper_open_findings_by_cause{{cause="{kind}"}} 0.0' in text
    metrics.set_open_findings_by_cause({"unknown": 3, "world_rule": 2})
    metrics.set_open_findings_by_cause({"world_rule": 1})
    text = generate_latest(metrics.registry).decode()
    assert 'goalkeeper_open_findings_by_cause{cause="world_rule"} 1.0' in text
    assert 'goalkeeper_open_findings_by_cause{cause="unknown"} 0.0' in text


def test_tick_record_keeps_causes_and_reads_old_records_as_none() -> None:
    record = TickRecord(
        "success", 3, (("redis", 6379, "tcp", "none", 3),), 0, causes={"unknown": 3}
    )
    assert TickRecord.from_summary(record.summary()) == record
    old = record.summary()
    del old["causes"]
    back = TickRecord.from_summary(old)
    assert back is not None and dict(back.causes) == {}


def test_a_rule_behind_several_ports_of_one_mail_says_so_once_per_port() -> None:
    ranged = world_rule(port_range_min=6000, port_range_max=7000)
    redis = with_cause(ranged)
    other = replace(finding("203.0.113.5", 6380, "redis"), cause=ranged.to_json())
    message = parsed(render(customer_report(redis, other)))
    text_part = message.get_body(("plain",))
    assert isinstance(text_part, EmailMessage)
    text = text_part.get_content()
    warning = f"Rule {RULE_ID} also lets through 1 other port listed in this mail: delete it once"
    assert text.count(warning) == 2
    alone, _ = bodies(redis)
    assert "also lets through" not in alone
