"""The cron schedule means what a standard crontab means (APScheduler 3 numbers weekdays from
Monday; crontab from Sunday); one that never fires is refused; a run too late is overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from goalkeeper.config import ScheduleSettings, Settings
from goalkeeper.schedule import (
    cron_trigger,
    crontab_weekdays,
    next_check,
    overdue_seconds,
    schedule_problems,
)

# Friday 27 November 2026, 12:00 UTC
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1", "mon"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0-2", "sun,mon,tue"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("1-5/2", "mon,wed,fri"),
        ("1,3,5", "mon,wed,fri"),
        ("SAT,sun", "sun,sat"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
    ],
)
def test_weekday_field_becomes_names(field: str, names: str) -> None:
    assert crontab_weekdays(field) == names


@pytest.mark.parametrize("field", ["8", "x", "5-2", "*/0", "mon-", "1/-1"])
def test_bad_weekday_fields_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=r"weekday|step"):
        crontab_weekdays(field)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 6 * * *", datetime(2026, 11, 28, 6, 0, tzinfo=UTC)),  # daily: tomorrow 06:00
        ("0 6 * * 1", datetime(2026, 11, 30, 6, 0, tzinfo=UTC)),  # Monday, not Tuesday
        ("0 6 * * 0", datetime(2026, 11, 29, 6, 0, tzinfo=UTC)),  # Sunday
        ("30 4 * * 1-5", datetime(2026, 11, 30, 4, 30, tzinfo=UTC)),  # next weekday
        ("15 12 * * 5", datetime(2026, 11, 27, 12, 15, tzinfo=UTC)),  # later today, Friday
    ],
)
def test_next_run_is_the_crontab_one(cron: str, expected: datetime) -> None:
    settings = Settings.model_validate({"schedule": {"cron": cron, "timezone": "UTC"}})
    assert cron_trigger(settings.schedule).get_next_fire_time(None, NOW) == expected


@pytest.mark.parametrize(
    ("cron", "problems"),
    [
        ("0 6 * * 1", []),
        ("0 0 30 2 *", ["never fires: no date matches it in the next 100 years"]),
        ("0 6 * * 8", ["weekday 8 is not 0-7 in '8'"]),
        ("61 6 * * *", ["Error validating expression '61': the last value (61) is higher "
                        "than the maximum value (59)"]),
    ],
)  # fmt: skip
def test_schedule_problems(cron: str, problems: list[str]) -> None:
    schedule = ScheduleSettings.model_validate({"cron": cron})
    assert schedule_problems(schedule, now=NOW) == problems


@pytest.mark.parametrize(
    ("next_run", "overdue"),
    [
        (None, None),  # nothing scheduled (the scheduler is not running)
        (NOW + timedelta(hours=1), None),  # due later
        (NOW - timedelta(hours=6), None),  # late, but a misfire may still run
        (NOW - timedelta(hours=7), 7 * 3600.0),  # too late: something is stuck
    ],
)
def test_a_next_run_is_overdue_past_the_misfire_grace(
    next_run: datetime | None, overdue: float | None
) -> None:
    assert overdue_seconds(next_run, NOW) == overdue


@pytest.mark.parametrize(
    ("cron", "zone", "expected"),
    [
        ("0 6 * * *", "UTC", "2026-12-03 06:00 UTC"),  # today's 06:00 has passed
        ("0 18 * * *", "UTC", "2026-12-02 18:00 UTC"),  # later today
        ("30 5 * * 1", "Europe/Berlin", "2026-12-07 05:30 CET"),  # crontab 1 = Monday
        ("0 9 1 7 *", "Europe/Berlin", "2027-07-01 09:00 CEST"),  # summer time
    ],
)
def test_the_next_check_a_mail_announces(cron: str, zone: str, expected: str) -> None:
    after = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # a Wednesday
    found = next_check(ScheduleSettings(cron=cron, timezone=zone), after=after)
    assert found is not None
    assert found.strftime("%Y-%m-%d %H:%M %Z") == expected
