"""The senders' one retry policy: how many attempts, and how long to wait between them.

The only module that imports tenacity. A sender raises Retryable for a failure worth another
attempt (with `after` when the other side said how long to wait); anything else ends the
attempts at once. It never sleeps on its own initiative: the caller passes the sleep, so tests
record the delays instead of waiting them out.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from goalkeeper.aio import Sleep, backoff_delay

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """`attempts` in all; between them aio.backoff_delay's jittered doubling, `base` to `cap`."""

    attempts: int
    base: float
    cap: float = math.inf

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1 for the first)."""
        return backoff_delay(attempt - 1, base=self.base, cap=self.cap)


class Retryable(Exception):
    """A failure that another attempt may get past; `after` overrides the backoff's delay."""

    def __init__(self, reason: str, *, after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


OnRetry = Callable[[int, float, Retryable], None]


async def retrying(
    attempt: Callable[[int], Awaitable[T]], *, policy: Backoff, sleep: Sleep, on_retry: OnRetry
) -> T:
    """Await `attempt(n)` for n = 1, 2, ... until it returns or raises anything but Retryable.

    `on_retry(n, delay, error)` is told before each wait. When the attempts are spent, the last
    Retryable is raised.
    """

    def wait(state: tenacity.RetryCallState) -> float:
        error = _retryable(state)
        return error.after if error.after is not None else policy.delay(state.attempt_number)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        on_retry(state.attempt_number, delay, _retryable(state))

    retrier = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max(1, policy.attempts)),
        wait=wait,
        retry=tenacity.retry_if_exception_type(Retryable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for trial in retrier:
        with trial:
            return await attempt(trial.retry_state.attempt_number)
    raise AssertionError("tenacity ended the attempts without an outcome")  # pragma: no cover


async def failed_reason(
    attempt: Callable[[int], Awaitable[object]], *, policy: Backoff, sleep: Sleep, on_retry: OnRetry
) -> str | None:
    """`retrying`, for a sender: None once an attempt went through, else the last failure's
    reason. The exception itself is dropped, so nothing the sender raises next carries the other
    side's words (or a URL with a token) along in its chain."""
    try:
        await retrying(attempt, policy=policy, sleep=sleep, on_retry=on_retry)
    except Retryable as error:
        return error.reason
    return None


def _retryable(state: tenacity.RetryCallState) -> Retryable:
    error = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(error, Retryable)  # the retry predicate lets nothing else through
    return error
