"""The cron schedule means what a standard crontab means (APScheduler 3 numbers weekdays from
Monday; crontab from Sunday)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from goalkeeper.config import Settings
from goalkeeper.schedule import cron_trigger, crontab_weekdays

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
