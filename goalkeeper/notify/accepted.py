"""What a report says of exceptions (DESIGN §9): accepted ports, ended ones, unreadable values,
and the command that declares one.

Pure text, for the mail templates: no I/O, no clock (today is an argument). The command is made
only for a server id that is a UUID, and every part a customer wrote (a reason) goes through
shlex.quote, so what the mail shows can be pasted into a shell as it is.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from goalkeeper.exceptions import METADATA_KEY, Acknowledgement, Allowance, PortKey, port_list
from goalkeeper.model import Finding, FindingStatus

REASON_PLACEHOLDER = "WHY"


@dataclass(frozen=True, slots=True)
class ExceptionWords:
    """What the exception texts of one mail are relative to: its day, and the cap in days."""

    today: date
    max_days: int

    def port_texts(self, finding: Finding) -> tuple[str, str]:
        """The port's `accepted` text and its exception note (ended, not honoured)."""
        accepted = finding.acknowledged if finding.status == FindingStatus.ACKNOWLEDGED else None
        note = finding.not_honoured or ""
        if finding.ended is not None:
            note = ended_text(finding.ended, today=self.today, max_days=self.max_days)
        elif note:
            note = f"Note: {note}."
        return (accepted_text(accepted, max_days=self.max_days) if accepted else "", note)

    def server_texts(self, members: Sequence[Finding]) -> tuple[str, str | None]:
        """Why the server's goalkeeper.allow cannot be read, and the command declaring one."""
        target = members[0].target
        name = target.server_name or "(unnamed server)"
        command = None
        if any(f.status not in (FindingStatus.RESOLVED, FindingStatus.ACKNOWLEDGED)
               for f in members):  # fmt: skip
            command = allow_command(
                target.server_id,
                ((f.port, str(f.protocol)) for f in members),
                current=target.allow,
                today=self.today,
                max_days=self.max_days,
            )
        problem = target.allow_problem
        return (unreadable_text(name, problem) if problem else "", command)


def plain(text: str) -> str:
    """Customer text as one line: the parser refuses control characters, but a stored row or a
    static file read before that check may still hold one."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def accepted_text(ack: Acknowledgement, *, max_days: int) -> str:
    """`accepted by you until DATE (reason)`, and the cap when the exception asked for more."""
    who = "you" if ack.source == "customer" else "your provider"
    text = f"accepted by {who} until {ack.until.isoformat()} ({plain(ack.reason)})"
    if ack.capped:
        text += (
            f"; you asked for {ack.requested_until.isoformat()}, but an exception is accepted "
            f"for at most {max_days} days at a time"
        )
    return text


def ended_text(ack: Acknowledgement, *, today: date, max_days: int) -> str:
    """Why a port accepted until the last scan is reported again."""
    what = "your exception" if ack.source == "customer" else "your provider's exception"
    if ack.until >= today:  # removed or changed before its date
        return (
            f"Note: {what} for this port ({plain(ack.reason)}, until "
            f"{ack.until.isoformat()}) no longer applies, so it is reported as open again."
        )
    text = (
        f"Note: {what} ended on {ack.until.isoformat()} ({plain(ack.reason)}), so this port is "
        "reported as open again."
    )
    if ack.capped:
        text += (
            f" That was the most we accept at once ({max_days} days); while the setting asks "
            f"for {ack.requested_until.isoformat()} it is accepted again from the next scan: "
            "remove it if the port no longer needs to be open."
        )
    return text


def unreadable_text(server_name: str, problem: str) -> str:
    return (
        f"We could not read the {METADATA_KEY} setting on server {plain(server_name)}: "
        f"{plain(problem)}. "
        "Until it is corrected, every port on this server is reported as usual."
    )


def allow_command(
    server_id: str,
    ports: Iterable[PortKey],
    *,
    current: Allowance | None,
    today: date,
    max_days: int,
) -> str | None:
    """`openstack server set --property goalkeeper.allow=... SERVER_ID` accepting `ports` (and
    what the server accepts already: the property holds one value), until the furthest date
    accepted; None when the server id is not a Nova UUID (nothing safe to name)."""
    try:
        uuid.UUID(server_id)
    except ValueError:
        return None
    if not server_id.replace("-", "").isalnum():  # uuid.UUID also takes braces and "urn:"
        return None
    keep = set(current.ports) if current else set()
    value = (
        f"{METADATA_KEY}={port_list(keep | set(ports))}"
        f";until={(today + timedelta(days=max_days)).isoformat()}"
        f";reason={current.reason if current else REASON_PLACEHOLDER}"
    )
    return f"openstack server set --property {shlex.quote(value)} {server_id}"
