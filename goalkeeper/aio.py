"""Small asyncio building blocks: guarded tasks, blocking calls in threads, backoff, `async with`.

Kept free of any outside library so every layer can use it. Nothing here sleeps on its own
initiative: callers pass the sleep they want, so tests can pass a fake one.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import random
from collections.abc import Awaitable, Callable, Collection, Coroutine
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any, ParamSpec, Self, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], datetime]
Died = Callable[[str, BaseException | None], None]  # a task's name, and its error or None


def start_guarded(
    coro: Coroutine[Any, Any, None], *, name: str, died: Died, finishable: bool = False
) -> asyncio.Task[None]:
    """Start a long-lived task whose death is never silent (kopf's `aiotasks.guard`).

    An error, or (unless `finishable`) a plain return, is handed to `died` with the task's name,
    from inside the except block so a logger there gets the traceback; then the task ends
    quietly, its error retrieved. A cancellation is an ordinary stop, and is not reported.
    """

    async def guarded() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as err:
            died(name, err)
            return
        if not finishable:
            died(name, None)

    return asyncio.create_task(guarded(), name=name)


def utc_now() -> datetime:
    """The wall clock, in UTC: the default `clock` of whatever takes one as an argument."""
    return datetime.now(UTC)


async def run_blocking(
    executor: Executor | None, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run `func` in a thread with the caller's context (log bindings) copied in.

    The thread is not orphaned on cancellation in the sense that the executor still owns it; the
    caller must make the work itself stoppable (e.g. a timeout) when that matters.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    call = functools.partial(context.run, func, *args, **kwargs)
    return await loop.run_in_executor(executor, call)


async def cancel_within(
    tasks: Collection[asyncio.Future[Any]], seconds: float, *, every: float = 0.1
) -> bool:
    """Cancel `tasks` and wait at most `seconds` for them to end; False if one still runs.

    A library can lose a cancellation (aiosmtplib's `wait_for` on Python 3.11 swallowed one and
    the task went on waiting), and a TaskGroup does not pass a second cancel on to its children:
    so pass the innermost tasks too. The cancel is repeated every `every` seconds, and a
    shutdown never waits past its deadline for a task that will not stop.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while running := [task for task in tasks if not task.done()]:
        for task in running:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.wait(running, timeout=min(every, left))
    return True


def backoff_delay(
    attempt: int, *, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with jitter: a delay between half and all of min(cap, base * 2**n)."""
    ceiling = min(cap, base * (2**attempt))
    return (rng or random).uniform(ceiling / 2, ceiling)


async def sleep_noting(
    sleep: Sleep, seconds: float, note: Callable[[float], None], *, every: float = 30.0
) -> None:
    """`sleep(seconds)`, in steps of at most `every`, calling `note(seconds left)` before each:
    a long wait says, now and then, that it is still waiting."""
    left = seconds
    while left > 0:
        note(left)
        step = min(every, left)
        await sleep(step)
        left -= step


class Closing:
    """`async with` for an object that owns resources from the start: entering gives the object,
    leaving awaits its `aclose()`."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Running:
    """`async with` for a service: entering awaits `start()` (and `close()` again if starting
    fails half way), leaving awaits `close()`."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
