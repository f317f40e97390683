"""Conversions between the store's rows and the values the rest of Goalkeeper uses.

Kept apart from the queries so each side stays readable; nothing here touches a connection.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from ipaddress import ip_address
from typing import Any, cast

from sqlalchemy.engine import RowMapping

from goalkeeper.lifecycle import FindingRecord
from goalkeeper.model import Transport
from goalkeeper.state.outbox import Channel, NewMessage, OutboxMessage, Status, parse_keys

# The findings table has exactly FindingRecord's fields as columns (a test holds them together).
_FIELDS = tuple(f.name for f in dataclasses.fields(FindingRecord))


def finding_row(record: FindingRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _FIELDS}
    row["address"] = str(record.address)
    row["protocol"] = str(record.protocol)
    return row


def record_from_row(row: RowMapping) -> FindingRecord:
    values = {name: row[name] for name in _FIELDS}
    values["address"] = ip_address(row["address"])
    values["protocol"] = Transport(row["protocol"])
    return FindingRecord(**values)


def message_row(run_id: str, created_at: datetime, message: NewMessage) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "channel": message.channel,
        "recipient": message.recipient,
        "recipient_key": message.recipient_key,
        "message_id": message.message_id,
        "payload": message.payload_json(),
        "finding_keys": message.keys_json(),
        "status": "pending",
        "attempts": 0,
        "parts_sent": 0,
        "created_at": created_at,
    }


def message_from_row(row: RowMapping) -> OutboxMessage:
    return dataclasses.replace(
        reference_from_row(row), payload=json.loads(row["payload"]), loaded=True
    )


def reference_from_row(row: RowMapping) -> OutboxMessage:
    """A stored message without its payload (a row selected without that column)."""
    return OutboxMessage(
        id=row["id"],
        run_id=row["run_id"],
        channel=cast(Channel, row["channel"]),
        recipient=row["recipient"],
        recipient_key=row["recipient_key"],
        message_id=row["message_id"],
        payload={},
        loaded=False,
        status=cast(Status, row["status"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        last_error=row["last_error"],
        last_attempt_at=row["last_attempt_at"],
        sent_at=row["sent_at"],
        failed_at=row["failed_at"],
        finding_keys=parse_keys(row["finding_keys"]),
        parts_sent=row["parts_sent"],
    )
