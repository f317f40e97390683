"""The `async with` building blocks of goalkeeper/aio.py."""

from __future__ import annotations

import pytest

from goalkeeper.aio import Closing, Running


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
