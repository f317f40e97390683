"""Sending a stored mail other than as the tick wrote it: rerouted at send time, or retried.

Just before a mail goes out, `reroute` checks that every address it speaks of still belongs to
the same owner and, if one moved, has the store replace it with mails for the current owners
(`StateStore.reroute`). `retry_failed` is the operator's way back to pending. What the mails
say is goalkeeper.compose's; this module decides only whether and to whom they go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime
from ipaddress import ip_address

from goalkeeper import logs
from goalkeeper.compose import compose_mails
from goalkeeper.config import Settings
from goalkeeper.findings import recipient_key
from goalkeeper.model import IPAddress, Target
from goalkeeper.scanning.catalog import Catalog
from goalkeeper.schedule import next_check
from goalkeeper.state import Channel, OutboxMessage, StateStore

log = logs.get_logger(__name__)
REROUTED = " (rerouted from "  # a replacement's key: "<owner key> (rerouted from <old key>)"
OWNER_CHANGED = "not sent: an address changed owner"  # a rerouted original: never to be retried
Owners = Callable[[], Awaitable[Mapping[IPAddress, Target]]]


async def reroute(
    message: OutboxMessage,
    *,
    owners: Owners,
    store: StateStore,
    settings: Settings,
    catalog: Catalog,
    now: datetime,
) -> list[OutboxMessage] | None:
    """None when the mail may go as it is; else the stored replacements for the current owners.

    An address the inventory no longer lists keeps its old owner: with no one else to tell,
    the last owner we know is still the right one.
    """
    if message.channel != "email" or not message.finding_keys:
        return None
    current = await owners()
    meant_for = message.recipient_key.split(REROUTED, 1)[0]
    moved = {
        key: current[address]
        for key in message.finding_keys
        if (address := ip_address(key[0])) in current
        and recipient_key(current[address].owner, current[address]) != meant_for
    }
    if not moved:
        return None
    records = await store.load_findings({ip_address(k[0]) for k in message.finding_keys})
    findings = []
    for key in message.finding_keys:
        record = records.get(key)
        if record is None:
            continue
        finding = record.to_finding()
        if key in moved:
            finding = dataclasses.replace(finding, target=moved[key])
        findings.append(finding)
    composed = list(
        compose_mails(
            findings,
            settings=settings,
            catalog=catalog,
            run_id=message.run_id,
            now=now,
            key_suffix=f"{REROUTED}{meant_for})",
            next_check=next_check(settings.schedule, after=now),
        )
    )
    new_owners = sorted({mail.message.recipient for mail in composed})
    replacements = await store.reroute(
        message.id,
        [mail.message for mail in composed],
        reason=f"{OWNER_CHANGED}; sent to {', '.join(new_owners)} instead",
        now=now,
    )
    log.warning(
        "mail rerouted: owner changed between scan and send",
        was=message.recipient,
        now_to=new_owners,
        addresses=sorted({k[0] for k in moved}),
    )
    return replacements


@dataclasses.dataclass(frozen=True, slots=True)
class Retried:
    """What an operator's retry did: the messages moved back to pending, and those left alone."""

    moved: tuple[int, ...]
    skipped: Mapping[int, str]  # id -> why it was not moved

    def as_dict(self) -> dict[str, object]:
        return {"moved": list(self.moved), "skipped": {str(k): v for k, v in self.skipped.items()}}


async def retry_failed(
    store: StateStore,
    *,
    channel: Channel | None = None,
    ids: Collection[int] | None = None,
    who: str,
) -> Retried:
    """Move failed messages (of `channel`, among `ids`) back to pending, attempts reset, so the
    next delivery pass sends them (after a relay outage, or once a bad address is fixed).

    A mail rerouted because its address changed owner is never moved: its replacement went to
    the new owner, and sending it would tell the old one about a server that is no longer theirs.
    """
    failed = await store.failed(channel=channel, ids=ids)
    skipped: dict[int, str] = {}
    wanted = []
    for message in failed:
        if (message.last_error or "").startswith(OWNER_CHANGED):
            skipped[message.id] = "rerouted to the current owner: retrying would mail the old one"
        else:
            wanted.append(message.id)
    for missing in sorted(set(ids or ()) - {m.id for m in failed}):
        skipped[missing] = "no failed message with this id" + (f" on {channel}" if channel else "")
    moved = tuple(await store.requeue(wanted))
    log.warning(
        "failed messages moved back to pending",
        who=who,
        channel=channel or "any",
        ids=list(moved),
        count=len(moved),
        skipped=len(skipped),
    )
    return Retried(moved=moved, skipped=skipped)
