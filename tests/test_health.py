"""What /healthz and /readyz say, from the daemon's flags and a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from goalkeeper.health import Health
from goalkeeper.schedule import overdue_seconds

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Schedule:
    def __init__(self, next_run: datetime | None, *, running: bool = True) -> None:
        self.running = running
        self.next_run = next_run

    def next_run_time(self) -> datetime | None:
        return self.next_run

    def overdue(self, now: datetime) -> float | None:
        return overdue_seconds(self.next_run, now)


class Store:
    def __init__(self, problem: str | None = None) -> None:
        self.problem = problem
        self.checks = 0

    async def check(self) -> str | None:
        self.checks += 1
        return self.problem


def health(schedule: Schedule, store: Store, seconds: list[float]) -> Health:
    return Health(
        schedule=schedule,
        store=store,
        max_tick_seconds=lambda: 3600.0,
        clock=lambda: NOW,
        monotonic=lambda: seconds[0],
    )


def test_liveness_names_a_long_tick_and_an_overdue_schedule() -> None:
    seconds = [100.0]
    flags = health(Schedule(NOW + timedelta(hours=1)), Store(), seconds)
    assert flags.liveness() == (
        True,
        {"tick_running": False, "next_tick": str(NOW + timedelta(hours=1))},
    )
    flags.tick_started()
    seconds[0] += 3601
    ok, details = flags.liveness()
    assert (ok, details["tick_running"], details["problems"]) == (
        False,
        True,
        ["tick running for 3601 s"],
    )
    flags.tick_ended()
    assert flags.liveness()[0] is True

    late = health(Schedule(NOW - timedelta(hours=7)), Store(), seconds)
    assert late.liveness()[1]["problems"] == ["scheduled tick overdue by 25200 s"]
    stopped = health(Schedule(None, running=False), Store(), seconds)
    assert stopped.liveness() == (False, {"tick_running": False, "next_tick": None,
                                          "problems": ["scheduler not running"]})  # fmt: skip


async def test_readiness_needs_a_start_and_a_store_check_and_ends_with_shutdown() -> None:
    store = Store()
    flags = health(Schedule(None), store, [0.0])
    assert (await flags.readiness())[0] is False  # not started yet
    flags.started = True
    assert await flags.readiness() == (True, {"shutting_down": False, "started": True,
                                              "state_store": True})  # fmt: skip
    store.problem = "the state store did not answer within 2 s"
    ok, details = await flags.readiness()
    assert (ok, details["state_store_problem"]) == (False, store.problem)
    store.problem, checks = None, store.checks
    flags.shutting_down = True
    assert (await flags.readiness())[0] is False
    assert store.checks == checks  # the store is about to close: the last answer stands
