"""The daemon's side of the admin API (goalkeeper.probes.Controls): start a tick, read the
findings, send failed messages again. The HTTP layer checks the token; this decides nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from goalkeeper.delivery import Delivery
from goalkeeper.resend import retry_failed
from goalkeeper.state import Channel, StateStore
from goalkeeper.views import record_as_dict


@dataclass(frozen=True)
class AdminApi:
    store: StateStore
    delivery: Delivery
    request_tick: Callable[[str], str | None]  # a run id, or None while one runs

    async def findings(self, *, include_resolved: bool) -> list[dict[str, Any]]:
        records = await self.store.list_findings(include_resolved=include_resolved)
        return [record_as_dict(r) for r in records]

    async def retry_failed(
        self, *, channel: str | None, ids: list[int] | None, who: str
    ) -> dict[str, Any]:
        """POST /outbox/retry: failed messages back to pending, and sent now (not in 5 min)."""
        wanted: Channel | None = None
        if channel == "email":
            wanted = "email"
        elif channel == "telegram":
            wanted = "telegram"
        retried = await retry_failed(self.store, channel=wanted, ids=ids, who=who)
        if retried.moved:
            await self.delivery.resend_pending()
        return retried.as_dict()
