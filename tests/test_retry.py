"""The senders' one retry policy: attempts, the backoff's shape, `after`, and what stops it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from goalkeeper.notify.retry import Backoff, Retryable, failed_reason, retrying
from tests.recorded_sleep import RecordedSleep


def _failing(
    times: int, *, after: float | None = None
) -> tuple[list[int], Callable[[int], Awaitable[str]]]:
    seen: list[int] = []

    async def attempt(number: int) -> str:
        seen.append(number)
        if number <= times:
            raise Retryable(f"failure {number}", after=after)
        return "done"

    return seen, attempt


async def test_retries_until_an_attempt_succeeds_doubling_the_jittered_delay() -> None:
    sleep = RecordedSleep()
    told: list[tuple[int, str]] = []
    seen, attempt = _failing(2)
    result = await retrying(
        attempt,
        policy=Backoff(attempts=3, base=1.0),
        sleep=sleep,
        on_retry=lambda n, delay, error: told.append((n, error.reason)),
    )
    assert result == "done"
    assert seen == [1, 2, 3]
    assert told == [(1, "failure 1"), (2, "failure 2")]
    assert 0.5 <= sleep.delays[0] <= 1.0
    assert 1.0 <= sleep.delays[1] <= 2.0


async def test_gives_up_with_the_last_retryable_and_no_wait_after_the_last_attempt() -> None:
    sleep = RecordedSleep()
    seen, attempt = _failing(9)
    with pytest.raises(Retryable, match="failure 3"):
        await retrying(
            attempt,
            policy=Backoff(attempts=3, base=4.0, cap=5.0),
            sleep=sleep,
            on_retry=lambda *_: None,
        )
    assert seen == [1, 2, 3]
    assert len(sleep.delays) == 2
    assert 2.5 <= sleep.delays[1] <= 5.0  # 4 * 2 = 8, capped at 5, jittered down to half


async def test_after_overrides_the_backoff() -> None:
    sleep = RecordedSleep()
    _, attempt = _failing(2, after=7.0)
    await retrying(
        attempt,
        policy=Backoff(attempts=3, base=1.0),
        sleep=sleep,
        on_retry=lambda *_: None,
    )
    assert sleep.delays == [7.0, 7.0]


async def test_any_other_error_ends_the_attempts_at_once() -> None:
    sleep = RecordedSleep()
    seen: list[int] = []

    async def attempt(number: int) -> None:
        seen.append(number)
        raise ValueError("permanent")

    with pytest.raises(ValueError, match="permanent"):
        await retrying(
            attempt, policy=Backoff(attempts=3, base=1.0), sleep=sleep, on_retry=lambda *_: None
        )
    assert seen == [1]
    assert sleep.delays == []


@pytest.mark.parametrize(("failures", "expected"), [(1, None), (3, "failure 3")])
async def test_failed_reason_is_none_once_through_else_the_last_reason(
    failures: int, expected: str | None
) -> None:
    seen, attempt = _failing(failures)
    policy = Backoff(attempts=3, base=0.0)
    reason = await failed_reason(
        attempt, policy=policy, sleep=RecordedSleep(), on_retry=lambda *_: None
    )
    assert reason == expected
    assert seen == [1, 2, 3][: min(failures + 1, 3)]
