"""One tick at a time: a tick that said "tick finished" no longer blocks the next one.

The tick's own work (`run_tick`) and its scanner are stand-ins here, so the moment between the
two (the scanner still closing after "tick finished") can be held open and looked at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from goalkeeper import ticks as ticks_module
from goalkeeper.config import Settings
from goalkeeper.health import Health
from goalkeeper.metrics import Metrics
from goalkeeper.ticks import Ticks
from tests.test_probes import FakeSchedule, FakeStoreCheck

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Stand:
    """What the stand-ins saw and what they wait for."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.close = asyncio.Event()  # set: the scanner may finish closing
        self.closing = asyncio.Event()  # set: run_tick returned, the scanner is closing
        self.died: list[str] = []


class FakeInventory:
    async def get(self, settings: Settings) -> object:
        return object()


class FakeDelivery:
    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        yield


class FakeWatch:
    def refresh_soon(self) -> None:
        pass


@pytest.fixture
def stand(monkeypatch: pytest.MonkeyPatch) -> Stand:
    seen = Stand()

    @asynccontextmanager
    async def scanner(settings: Settings) -> AsyncIterator[object]:
        yield object()
        seen.closing.set()
        await seen.close.wait()  # NmapScanner.aclose: a thread hop, of no fixed length

    async def run_tick(**kwargs: Any) -> None:
        seen.ran.append(kwargs["run_id"])  # the real one logs "tick finished" as it returns

    monkeypatch.setattr(ticks_module, "scanner", scanner)
    monkeypatch.setattr(ticks_module, "run_tick", run_tick)
    return seen


def make_ticks(stand: Stand) -> tuple[Ticks, Health]:
    health = Health(
        schedule=FakeSchedule(),
        store=FakeStoreCheck(),
        max_tick_seconds=lambda: 3600.0,
        clock=lambda: NOW,
        monotonic=lambda: 0.0,
    )
    settings = Settings()
    ticks = Ticks(
        settings=lambda: settings,
        store=cast(Any, None),
        delivery=cast(Any, FakeDelivery()),
        watch=cast(Any, FakeWatch()),
        health=health,
        inventory=cast(Any, FakeInventory()),
        catalog=cast(Any, None),
        metrics=Metrics(),
        clock=lambda: NOW,
        died=lambda name, error: stand.died.append(name),
    )
    return ticks, health


async def test_a_tick_asked_for_while_one_runs_is_refused(stand: Stand) -> None:
    ticks, health = make_ticks(stand)
    first = ticks.request("api")
    assert first is not None and health.tick_running
    assert ticks.request("api") is None  # the 409 of POST /scan
    stand.close.set()
    await asyncio.wait(ticks.running())
    assert stand.ran == [first] and not health.tick_running and stand.died == []


async def test_the_next_tick_may_start_once_the_last_has_finished_its_work(stand: Stand) -> None:
    ticks, health = make_ticks(stand)
    first = ticks.request("api")
    await stand.closing.wait()  # run_tick returned: "tick finished" is in the log
    assert not health.tick_running
    second = ticks.request("api")
    assert second is not None and second != first
    (waiting,) = [t for t in ticks.running() if t.get_name() == f"goalkeeper-tick-{second}"]
    for _ in range(10):  # turns of the loop, not time: room for the second tick to run ahead
        await asyncio.sleep(0)
    assert stand.ran == [first]  # it waits for the first one's scanner to close
    stand.close.set()
    await waiting
    assert stand.ran == [first, second] and not health.tick_running and stand.died == []
