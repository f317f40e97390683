"""Outbox messages: what a tick asks to send, and what the store hands back to the senders.

A message is stored complete (the rendered mail, or the Telegram text) so that a restarted
process sends exactly what the tick decided, without rendering again. This module only shapes
values; it never touches the database or the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

from goalkeeper.lifecycle import FindingKey
from goalkeeper.model import OutgoingMail

Channel: TypeAlias = Literal["email", "telegram"]
# "superseded": never sent, because a later tick's mail to the same recipient replaced it (kept,
# with the run that replaced it in `last_error`, so nothing a tick decided disappears).
Status: TypeAlias = Literal["pending", "sent", "failed", "superseded"]
CHANNELS: tuple[Channel, ...] = ("email", "telegram")


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One message a tick wants sent. (run, channel, recipient_key) identifies it.

    `recipient_key` is who it is for logically (the owner's address, "not-found:<project>",
    "summary"): in stage many mails share one real recipient. `finding_keys` are the findings it
    tells about; when it is marked sent their notification counters move.
    """

    channel: Channel
    recipient: str
    recipient_key: str
    message_id: str
    payload: Mapping[str, Any]
    finding_keys: tuple[FindingKey, ...] = ()

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}")
        if not self.message_id or not self.recipient_key:
            raise ValueError("a message needs a message_id and a recipient_key")

    @classmethod
    def email(
        cls, mail: OutgoingMail, *, recipient_key: str, finding_keys: Iterable[FindingKey] = ()
    ) -> NewMessage:
        return cls(
            channel="email",
            recipient=mail.recipient,
            recipient_key=recipient_key,
            message_id=mail.message_id,
            payload={
                "recipient": mail.recipient,
                "sender": mail.sender,
                "subject": mail.subject,
                "text": mail.text,
                "html": mail.html,
                "message_id": mail.message_id,
                "headers": dict(mail.headers),
            },
            finding_keys=tuple(finding_keys),
        )

    @classmethod
    def telegram(
        cls, text: str, *, chat_id: str, message_id: str, recipient_key: str = "summary"
    ) -> NewMessage:
        return cls(
            channel="telegram",
            recipient=chat_id,
            recipient_key=recipient_key,
            message_id=message_id,
            payload={"text": text},
        )

    def payload_json(self) -> str:
        return json.dumps(self.payload, ensure_ascii=False, sort_keys=True)

    def keys_json(self) -> str:
        return json.dumps([list(key) for key in self.finding_keys])


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A stored message and how its delivery went. `id` is the row id, stable for its life."""

    id: int
    run_id: str
    channel: Channel
    recipient: str
    recipient_key: str
    message_id: str
    payload: Mapping[str, Any]
    status: Status
    attempts: int
    created_at: datetime
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    failed_at: datetime | None = None
    finding_keys: tuple[FindingKey, ...] = field(default=())
    parts_sent: int = 0  # of a multi-part Telegram message: those already accepted
    # False for a reference (what commit_tick returns): the payload stays in the store until a
    # sender reads it with StateStore.message(id), so a tick never holds every mail at once.
    loaded: bool = True

    def mail(self) -> OutgoingMail:
        """The stored e-mail, exactly as the tick rendered it."""
        if self.channel != "email":
            raise ValueError(f"message {self.id} is a {self.channel} message, not an e-mail")
        self._require_payload()
        p = self.payload
        return OutgoingMail(
            recipient=p["recipient"],
            sender=p["sender"],
            subject=p["subject"],
            text=p["text"],
            html=p["html"],
            message_id=p["message_id"],
            headers=dict(p.get("headers") or {}),
        )

    @property
    def text(self) -> str:
        """The Telegram text (or the plain text part of an e-mail)."""
        self._require_payload()
        return str(self.payload["text"])

    def _require_payload(self) -> None:
        if not self.loaded:
            raise ValueError(f"message {self.id} is a reference: read it with store.message(id)")


def parse_keys(raw: str) -> tuple[FindingKey, ...]:
    return tuple((str(a), int(p), str(proto)) for a, p, proto in json.loads(raw))
