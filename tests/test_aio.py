"""The building blocks of goalkeeper/aio.py: `async with`, guarded tasks."""

from __future__ import annotations

import asyncio
import sys

import pytest

from goalkeeper.aio import Closing, Running, start_guarded


class Resource(Closing):
    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


class Service(Running):
    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")
        if self.fail:
            raise OSError("address in use")

    async def close(self) -> None:
        self.events.append("close")


async def test_closing_gives_the_object_and_closes_it_however_the_block_ends() -> None:
    resource = Resource()
    async with resource as entered:
        assert entered is resource
        assert resource.closed == 0
    assert resource.closed == 1

    async def fail_inside() -> None:
        async with resource:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await fail_inside()
    assert resource.closed == 2


async def test_running_starts_then_closes() -> None:
    service = Service()
    async with service as entered:
        assert entered is service
        assert service.events == ["start"]
    assert service.events == ["start", "close"]


async def test_running_closes_what_a_failed_start_left_behind() -> None:
    service = Service(fail=True)
    with pytest.raises(OSError, match="address in use"):
        async with service:
            pytest.fail("the block must not run when starting failed")
    assert service.events == ["start", "close"]


async def test_a_guarded_task_that_fails_is_reported_with_its_traceback() -> None:
    reported: list[tuple[str, str, bool]] = []

    def died(name: str, error: BaseException | None) -> None:
        # Called inside the guard's except block, so a logger here gets the traceback.
        reported.append((name, repr(error), sys.exc_info()[1] is error))

    async def fails() -> None:
        raise ValueError("boom")

    task = start_guarded(fails(), name="worker", died=died)
    await task
    assert task.get_name() == "worker"
    assert reported == [("worker", "ValueError('boom')", True)]


async def test_a_guarded_task_may_not_end_unless_finishable() -> None:
    reported: list[tuple[str, BaseException | None]] = []

    async def returns() -> None:
        return None

    await start_guarded(returns(), name="loop", died=lambda n, e: reported.append((n, e)))
    await start_guarded(returns(), name="tick", died=lambda n, e: reported.append((n, e)),
                        finishable=True)  # fmt: skip
    assert reported == [("loop", None)]


async def test_a_cancelled_guarded_task_is_an_ordinary_stop() -> None:
    reported: list[str] = []
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = start_guarded(forever(), name="watch", died=lambda n, e: reported.append(n))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reported == []
