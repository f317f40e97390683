"""What a tick says to whom: one mail per recipient key, and the Telegram summary.

Pure: rendering is the notify layer's and storage the state layer's; nothing here reads the
store, the network or the clock. Mails come out one at a time as they are taken, so the caller
(the tick's commit) decides how many rendered mails are alive at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime

from goalkeeper.config import Settings
from goalkeeper.findings import LatentPlan, group_reports, latent_report, recipient_key
from goalkeeper.lifecycle import LifecyclePlan
from goalkeeper.model import Finding, LatentAdvice, MailOutcome, OwnerReport, TickReport
from goalkeeper.notify.latent import render_latent_report
from goalkeeper.notify.render import MailFooter, render_owner_report
from goalkeeper.notify.summary import render_summary
from goalkeeper.scanning.catalog import Catalog
from goalkeeper.state import NewMessage

SUMMARY_KEY = "summary"


@dataclasses.dataclass(frozen=True, slots=True)
class ComposedMail:
    """One owner's mail, ready for the outbox, and the report it was rendered from."""

    report: OwnerReport
    message: NewMessage

    @property
    def outcome(self) -> MailOutcome:
        """What the tick report says of it: queued, handed on once committed."""
        report, message = self.report, self.message
        return MailOutcome(
            recipient=message.recipient,
            intended=report.intended,
            owner_name=report.owner.name,
            findings=len(report.findings),
            message_id=message.message_id,
            delivered=False,
            subject=str(message.payload.get("subject", "")),
            queued=True,
        )


def compose_tick(
    plan: LifecyclePlan,
    *,
    settings: Settings,
    catalog: Catalog,
    run_id: str,
    now: datetime,
    latent: LatentPlan | None = None,
    next_check: datetime | None = None,
) -> Iterator[ComposedMail]:
    """The mails of a tick's lifecycle plan: its findings to tell about, then the resolved,
    each with its owner's latent exposures (acknowledged findings ride along in a mail that goes
    out anyway); then the latent exposures mailed alone."""
    latent = latent or LatentPlan()
    told = (*plan.to_notify, *plan.resolved_to_notify)
    yield from compose_mails(
        (*told, *with_reports(plan.acknowledged, told)),
        settings=settings,
        catalog=catalog,
        run_id=run_id,
        now=now,
        latent=latent.attached,
        next_check=next_check,
    )
    yield from compose_latent(
        latent.alone, settings=settings, run_id=run_id, now=now, next_check=next_check
    )


def compose_latent(
    alone: Mapping[str, Sequence[LatentAdvice]],
    *,
    settings: Settings,
    run_id: str,
    now: datetime,
    next_check: datetime | None = None,
) -> Iterator[ComposedMail]:
    """One mail of latent exposures only per recipient key, routed as reports are (NOT FOUND
    to ops, stage and customer mail off to ops)."""
    notify = settings.notify
    redirect = settings.environment == "stage" or not notify.send_to_customers
    for key, items in alone.items():
        report = latent_report(key, items, ops_email=notify.ops_email, redirect=redirect)
        mail = render_latent_report(
            report,
            environment=settings.environment,
            run_id=run_id,
            sender=notify.sender,
            generated_at=now,
            latent_days=notify.latent_days,
            templates_dir=notify.templates_dir,
            footer=mail_footer(settings, next_check),
        )
        yield ComposedMail(report, NewMessage.email(mail, recipient_key=key, finding_keys=[]))


def mail_footer(settings: Settings, next_check: datetime | None = None) -> MailFooter:
    """notify.reply_to (else the ops address), notify.scanner_info (its addresses, else
    scan.egress_addresses: where the cloud sees the probes come from) and the next scheduled
    check, in the schedule's time zone ("2026-12-03 06:00 UTC")."""
    notify, info = settings.notify, settings.notify.scanner_info
    return MailFooter(
        reply_to=notify.reply_to or notify.ops_email,
        scanned_from=tuple(str(a) for a in info.addresses or settings.scan.egress_addresses),
        info_url=info.info_url,
        contact=info.contact,
        next_check=next_check.strftime("%Y-%m-%d %H:%M %Z") if next_check else None,
    )


def with_reports(acknowledged: Iterable[Finding], told: Iterable[Finding]) -> list[Finding]:
    """The acknowledged findings whose owner gets a mail anyway: never one of their own."""
    mailed = {recipient_key(f.owner, f.target) for f in told}
    return [f for f in acknowledged if recipient_key(f.owner, f.target) in mailed]


def compose_mails(
    findings: Iterable[Finding],
    *,
    settings: Settings,
    catalog: Catalog,
    run_id: str,
    now: datetime,
    key_suffix: str = "",
    latent: Mapping[str, Sequence[LatentAdvice]] | None = None,
    next_check: datetime | None = None,
) -> Iterator[ComposedMail]:
    """One rendered mail per recipient key, rendered one at a time as they are taken: the
    caller decides how many are alive."""
    notify = settings.notify
    redirect = settings.environment == "stage" or not notify.send_to_customers
    for grouped in group_reports(findings, ops_email=notify.ops_email, redirect=redirect):
        listed = tuple((latent or {}).get(grouped.key, ()))
        report = dataclasses.replace(grouped, key=grouped.key + key_suffix, latent=listed)
        mail = render_owner_report(
            report,
            environment=settings.environment,
            run_id=run_id,
            sender=notify.sender,
            advice={f.service: catalog.advice_for(f.service) for f in report.findings},
            generated_at=now,
            templates_dir=notify.templates_dir,
            max_exception_days=notify.max_exception_days,
            footer=mail_footer(settings, next_check),
        )
        message = NewMessage.email(
            mail, recipient_key=report.key, finding_keys=[f.key for f in report.findings]
        )
        yield ComposedMail(report, message)


def compose_summary(report: TickReport, *, settings: Settings) -> NewMessage | None:
    """The Telegram summary of a tick's report, or None when Telegram is not configured."""
    telegram = settings.notify.telegram
    if not telegram.enabled or not telegram.chat_id:
        return None
    return NewMessage.telegram(
        render_summary(report, detail=settings.notify.telegram.detail),
        chat_id=telegram.chat_id,
        message_id=f"{report.run_id}.summary",
        recipient_key=SUMMARY_KEY,
    )
