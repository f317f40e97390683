"""The mail of latent exposures alone (DESIGN §8): firewall rules open to the world on dangerous
ports where nothing answered, told at most every notify.latent_days when no report goes out.

Pure like goalkeeper.notify.render, whose escaping, headers and templates it shares; the list
itself is the `latent_section` templates, which the report mails include too.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from goalkeeper.model import OutgoingMail, OwnerReport
from goalkeeper.notify.causes import latent_blocks
from goalkeeper.notify.render import (
    MailFooter,
    ProjectRef,
    _aware,
    _environment,
    _single_address,
    _when,
    frame_headers,
    header_text,
    message_id,
    subject_prefix,
)


def render_latent_report(
    report: OwnerReport,
    *,
    environment: str,
    run_id: str,
    sender: str,
    generated_at: datetime,
    latent_days: float,
    templates_dir: Path | None = None,
    footer: MailFooter = MailFooter(),  # noqa: B008 (frozen: one shared default is safe)
) -> OutgoingMail:
    """One multipart advisory for one recipient: only `report.latent`, never a finding."""
    recipient = _single_address(report.recipient, "recipient")
    _single_address(sender, "sender")
    if not report.latent:
        raise ValueError("a latent-exposure mail needs at least one exposure: it would say nothing")
    context: dict[str, Any] = {
        "environment": environment,
        "run_id": run_id,
        "generated_at": _when(generated_at),
        "recipient": recipient,
        "intended": report.intended,
        "redirected": report.redirected,
        "not_found": report.not_found,
        "owner": report.owner,
        "latent": latent_blocks(report.latent),
        "latent_count": len(report.latent),
        "latent_days": f"{latent_days:g}",
        "footer": footer,
        "projects": sorted(
            {ProjectRef(e.target.project_id, e.target.project_name) for e in report.latent},
            key=lambda p: (p.project_name, p.project_id),
        ),
    }
    env = _environment(templates_dir)
    prefix = subject_prefix(environment, report)
    subject = header_text(prefix + env.get_template("latent_subject.txt.j2").render(context))
    headers = frame_headers(
        {"Date": format_datetime(_aware(generated_at)), "X-Goalkeeper-Kind": "latent-exposure"},
        environment,
        run_id,
        report,
        footer,
    )
    return OutgoingMail(
        recipient=recipient,
        sender=sender,
        subject=subject,
        text=env.get_template("latent.txt.j2").render(context),
        html=env.get_template("latent.html.j2").render(context),
        message_id=message_id(run_id, report.key or recipient, sender),
        headers=headers,
    )
