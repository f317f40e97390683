"""When ticks are due: the cron schedule as a standard crontab means it, on APScheduler 3.

The one importer of APScheduler. It only *says* a tick is due (`on_due`): APScheduler 3 does not
wait for running jobs, so the daemon owns the tick's task. Weekdays need care: APScheduler
numbers them from Monday = 0, crontab from Sunday = 0 (and 7), so "0 6 * * 1" handed over as it
is would run on Tuesdays; the field is turned into day names, which both agree on. No clock of
its own: the time is an argument or the caller's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from goalkeeper.aio import utc_now
from goalkeeper.config import ScheduleSettings

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

# APScheduler loads on first use (a schedule checked or started), not with the CLI's --help.

MISFIRE_GRACE_SECONDS = 6 * 3600  # a tick that is late (daemon busy, clock jump) still runs
CRON_HORIZON_YEARS = 100
_JOB = "tick"
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday; names; lists, ranges, steps) as day names."""
    days: set[int] = set()
    for item in field.lower().split(","):
        span, _, step_text = item.partition("/")
        step = _number(step_text, "step") if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in weekday field {field!r}")
        if span == "*":
            first, last = 0, 6
        else:
            low, dash, high = span.partition("-")
            if dash and not high:
                raise ValueError(f"weekday range without an end in {field!r}")
            first = _weekday(low, field)
            last = _weekday(high, field) if high else (6 if step_text else first)
            if high and last == 0:
                last = 7  # "5-0" and "5-7" both end on Sunday
        if last < first:
            raise ValueError(f"weekday range runs backwards in {field!r}")
        days.update(day % 7 for day in range(first, last + 1, step))
    return "*" if len(days) == 7 else ",".join(_WEEKDAYS[day] for day in sorted(days))


def _weekday(text: str, field: str) -> int:
    if text in _WEEKDAYS:
        return _WEEKDAYS.index(text)
    day = _number(text, f"weekday in {field!r}")
    if not 0 <= day <= 7:
        raise ValueError(f"weekday {day} is not 0-7 in {field!r}")
    return day


def _number(text: str, what: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad {what}: {text!r}")
    return int(text)


def cron_trigger(schedule: ScheduleSettings, *, end_date: datetime | None = None) -> CronTrigger:
    """The schedule as a standard 5-field crontab means it (not as `from_crontab` does)."""
    fields = schedule.cron.split()
    if len(fields) != 5:
        raise ValueError(f"a cron expression has 5 fields, not {len(fields)}")
    minute, hour, day, month, weekday = fields
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(weekday),
        timezone=schedule.timezone,
        end_date=end_date,
    )


def schedule_problems(schedule: ScheduleSettings, *, now: datetime | None = None) -> list[str]:
    """Why the cron expression is unusable (one APScheduler refuses, or one that never fires).

    "0 0 30 2 *" parses, but the daemon would start, never tick and look healthy. APScheduler
    searches to the year 9999 before it gives up; an end date makes the search stop early.
    """
    now = now or utc_now()
    try:
        trigger = cron_trigger(schedule, end_date=now.replace(year=now.year + CRON_HORIZON_YEARS))
    except ValueError as err:
        return [str(err)]
    if trigger.get_next_fire_time(None, now) is None:
        return [f"never fires: no date matches it in the next {CRON_HORIZON_YEARS} years"]
    return []


def next_check(schedule: ScheduleSettings, *, after: datetime) -> datetime | None:
    """When the schedule next fires after `after`, in its own time zone; None if never (a
    schedule check refuses such a cron at load)."""
    horizon = after.replace(year=after.year + CRON_HORIZON_YEARS)
    fire: datetime | None = cron_trigger(schedule, end_date=horizon).get_next_fire_time(None, after)
    return fire


def overdue_seconds(next_run: datetime | None, now: datetime) -> float | None:
    """How late the next run is, when it is later than a misfire may be; else None.

    A run this late will not happen any more (APScheduler drops it): something is stuck.
    """
    if next_run is None:
        return None
    late = (now - next_run).total_seconds()
    return late if late > MISFIRE_GRACE_SECONDS else None


class Schedule:
    """The running schedule: `start` it, `run` it as a task, `reschedule` on reload."""

    def __init__(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._due = asyncio.Event()

    def start(self, schedule: ScheduleSettings) -> None:
        self._scheduler.add_job(
            self._mark_due,
            trigger=cron_trigger(schedule),
            id=_JOB,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
        )
        self._scheduler.start()

    async def run(self, on_due: Callable[[], object]) -> None:
        """Call `on_due` each time a tick is due, until cancelled; the scheduler stops with it.

        APScheduler runs its jobs in tasks of its own: the job only flags, so what a tick does
        starts here, in a task the daemon named and guards.
        """
        try:
            while True:
                await self._due.wait()
                self._due.clear()
                on_due()
        finally:
            self.stop()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def reschedule(self, schedule: ScheduleSettings) -> None:
        self._scheduler.reschedule_job(_JOB, trigger=cron_trigger(schedule))

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def next_run_time(self) -> datetime | None:
        job = self._scheduler.get_job(_JOB) if self._scheduler.running else None
        return job.next_run_time if job else None

    def overdue(self, now: datetime) -> float | None:
        return overdue_seconds(self.next_run_time(), now)

    async def _mark_due(self) -> None:
        self._due.set()
