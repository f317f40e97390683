"""Standard crontab weekday numbers, as APScheduler 3 understands them.

APScheduler 3 numbers weekdays from Monday = 0; crontab from Sunday = 0 (and 7). Handing it a
crontab weekday field as it is would run "0 6 * * 1" on Tuesdays. This module turns the field
into day names, which both agree on. Pure: no scheduler, no clock.
"""

from __future__ import annotations

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
