"""The last tick's latent exposures (DESIGN §8) and when each owner was last told of them.

Latent exposures are advisories, never findings: the store keeps only the last tick's (each
commit replaces them whole, for `findings --latent`) and, per recipient key, when a mail that
listed them was committed (for notify.latent_days). Queries here are each given a connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from goalkeeper.state.schema import latent_exposures, latent_notices

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class LatentRecord:
    """One latent exposure as stored; `rules` is the JSON text of the rules that open it."""

    address: str
    port: int
    protocol: str
    recipient_key: str
    server_id: str
    server_name: str
    project_id: str
    rules: str
    seen_at: datetime

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.address, self.port, self.protocol)

    def as_dict(self) -> dict[str, Any]:
        """As `findings --json --latent` prints it: the rules parsed, the time in ISO 8601."""
        return asdict(self) | {"rules": json.loads(self.rules), "seen_at": self.seen_at.isoformat()}


async def replace_latent(
    connection: AsyncConnection, *, run_id: str, records: Sequence[LatentRecord]
) -> None:
    await connection.execute(delete(latent_exposures))
    rows = [asdict(r) | {"run_id": run_id} for r in records]
    for start in range(0, len(rows), _BATCH):
        await connection.execute(latent_exposures.insert(), rows[start : start + _BATCH])


async def read_latent(connection: AsyncConnection) -> list[LatentRecord]:
    query = select(latent_exposures).order_by(
        latent_exposures.c.address, latent_exposures.c.port, latent_exposures.c.protocol
    )
    fields = LatentRecord.__dataclass_fields__
    return [
        LatentRecord(**{k: v for k, v in row._mapping.items() if k in fields})
        for row in await connection.execute(query)
    ]


async def read_told(connection: AsyncConnection) -> dict[str, datetime]:
    rows = await connection.execute(select(latent_notices))
    return {row.recipient_key: row.told_at for row in rows}


async def mark_told(
    connection: AsyncConnection,
    insert: Callable[[Any], Any],
    *,
    keys: Collection[str],
    at: datetime,
) -> None:
    """Each of `keys` told at `at` (an upsert: one row per recipient key)."""
    if not keys:
        return
    statement = insert(latent_notices)
    statement = statement.on_conflict_do_update(
        index_elements=["recipient_key"], set_={"told_at": statement.excluded.told_at}
    )
    await connection.execute(statement, [{"recipient_key": k, "told_at": at} for k in sorted(keys)])
