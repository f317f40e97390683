"""Who hears of latent exposures, and how (DESIGN §8): listed in a report that goes out anyway,
mailed alone at most every notify.latent_days (0: never alone); the advisory mail itself."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from email.message import EmailMessage

import pytest

from goalkeeper.findings import LatentPlan, latent_due, latent_report, plan_latent
from goalkeeper.model import Owner, PortSpec, Transport
from goalkeeper.notify.causes import latent_blocks
from goalkeeper.notify.latent import render_latent_report
from goalkeeper.notify.render import to_mime
from goalkeeper.rootcause import LatentExposure, latent_advice, latent_exposures
from tests.test_latent import CATALOG, NOW, REDIS, RULE, coverage, finding, target

ADA = "ada@customer.example"
OWNER = Owner(name="Ada <b>", email=ADA, client_id="1")
OPS = "ops@provider.example"


def exposures(owner: Owner = OWNER) -> tuple[LatentExposure, ...]:
    web = dataclasses.replace(target("198.51.200.10"), owner=owner, server_name="<script>db")
    return latent_exposures(
        [web], [finding(web, REDIS)], CATALOG, egress=(), coverage=coverage("198.51.200.10")
    )


@pytest.mark.parametrize(
    ("last_told", "days", "due"),
    [
        (None, 30, True),  # never told: now
        (NOW - timedelta(days=1), 30, False),
        (NOW - timedelta(days=29), 30, True),  # within the slack of a daily tick's drift
        (NOW - timedelta(days=27), 30, False),
        (NOW - timedelta(days=31), 30, True),
        (None, 0, False),  # 0: never alone
        (NOW - timedelta(days=400), 0, False),
    ],
)
def test_latent_due(last_told: object, days: float, due: bool) -> None:
    assert latent_due(last_told, now=NOW, latent_days=days) is due  # type: ignore[arg-type]


def test_an_owner_with_a_report_gets_them_listed_never_alone() -> None:
    plan = plan_latent(exposures(), reports={ADA}, told={ADA: NOW}, now=NOW, latent_days=30)
    assert list(plan.attached) == [ADA] and not plan.alone
    assert plan.told == {ADA}


def test_an_owner_without_a_report_gets_them_alone_only_when_due() -> None:
    due = plan_latent(exposures(), reports=set(), told={}, now=NOW, latent_days=30)
    assert list(due.alone) == [ADA] and not due.attached
    recent = {ADA: NOW - timedelta(days=3)}
    quiet = plan_latent(exposures(), reports=set(), told=recent, now=NOW, latent_days=30)
    assert quiet == LatentPlan() and not quiet.told
    never = plan_latent(exposures(), reports=set(), told={}, now=NOW, latent_days=0)
    assert never == LatentPlan()


def test_the_advisory_mail_names_the_rule_and_its_commands_and_escapes_customer_text() -> None:
    (exposure,) = exposures()
    report = latent_report(ADA, [latent_advice(exposure)], ops_email=OPS, redirect=False)
    mail = render_latent_report(
        report, environment="prod", run_id="r1", sender=OPS, generated_at=NOW, latent_days=30
    )
    assert mail.recipient == ADA
    assert "where nothing listens yet" in mail.subject
    assert f"openstack security group rule delete {RULE}" in mail.text
    assert f"rule {RULE}: allows 6000-28000/tcp from 0.0.0.0/0" in mail.text
    assert "at most every 30 days" in mail.text
    assert "&lt;script&gt;db" in mail.html and "<script>" not in mail.html
    message = to_mime(mail)
    assert isinstance(message, EmailMessage) and message["X-Goalkeeper-Kind"] == "latent-exposure"


def test_an_unknown_owner_s_advisory_goes_to_ops_as_not_found() -> None:
    nobody = Owner()
    (exposure,) = exposures(nobody)
    report = latent_report("not-found:p", [latent_advice(exposure)], ops_email=OPS, redirect=False)
    assert report.recipient == OPS and report.not_found
    mail = render_latent_report(
        report, environment="prod", run_id="r1", sender=OPS, generated_at=NOW, latent_days=30
    )
    assert mail.subject.startswith("OWNER NOT FOUND")
    assert mail.headers["X-Goalkeeper-Owner"] == "NOT FOUND"


def test_no_mail_says_nothing() -> None:
    empty = dataclasses.replace(
        latent_report(ADA, [latent_advice(exposures()[0])], ops_email=OPS, redirect=False),
        latent=(),
    )
    with pytest.raises(ValueError, match="at least one exposure"):
        render_latent_report(
            empty, environment="prod", run_id="r1", sender=OPS, generated_at=NOW, latent_days=30
        )


def test_a_rule_opening_several_idle_ports_is_listed_once_with_only_its_delete() -> None:
    web = target("198.51.200.10")
    mongo = PortSpec(27017, Transport.TCP, "mongodb")
    elastic = PortSpec(9200, Transport.TCP, "elasticsearch")
    both = latent_exposures([web], [], [mongo, elastic], egress=(), coverage=coverage(
        "198.51.200.10", ports=[mongo, elastic]))  # fmt: skip
    (block,) = latent_blocks(latent_advice(e) for e in both)
    assert block.address == "198.51.200.10"
    assert block.ports == ("27017/tcp mongodb", "9200/tcp elasticsearch")
    (rule,) = block.rules
    assert rule.commands == (f"openstack security group rule delete {RULE}",)
