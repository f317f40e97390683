"""A grade that got worse is news at once; one that got better, or that verification could not
give this tick, waits for the reminder like any open finding (DESIGN §7)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from goalkeeper.lifecycle import Coverage, plan_lifecycle
from goalkeeper.model import FindingStatus, Grade
from tests.test_lifecycle import NOW, PORTS, seen, stored

HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("told", "stored_grade", "now_grade", "mailed"),
    [
        ("reachable", "reachable", Grade.UNAUTHENTICATED, True),  # worse: news at once
        ("unconfirmed", "unconfirmed", Grade.REACHABLE, True),
        (None, "reachable", Grade.UNAUTHENTICATED, True),  # a row from before 0007: its grade
        ("unauthenticated", "unauthenticated", Grade.REACHABLE, False),  # better: no news
        ("reachable", "reachable", Grade.REACHABLE, False),
        ("unauthenticated", "reachable", Grade.UNAUTHENTICATED, False),  # a timeout between
        ("reachable", "reachable", None, False),  # not verified this tick
        (None, None, Grade.UNAUTHENTICATED, False),  # graded for the first time: no storm
    ],
)
def test_a_worse_grade_is_mailed_before_the_reminder_is_due(
    told: str | None, stored_grade: str | None, now_grade: Grade | None, mailed: bool
) -> None:
    record = replace(stored(notified=HOUR), grade=stored_grade, notified_grade=told)
    plan = plan_lifecycle(
        {record.key: record},
        [replace(seen(), grade=now_grade)],
        Coverage(scanned=frozenset({record.address}), ports=frozenset(PORTS)),
        now=NOW,
        reminder_days=1,
        notify_resolved=True,
    )
    assert [f.key for f in plan.to_notify] == ([record.key] if mailed else [])
    assert plan.current[0].status is FindingStatus.OPEN
    # What the owner was told is kept until a mail is really sent (the store sets it then).
    assert plan.upserts[0].notified_grade == told
    assert plan.upserts[0].grade == (now_grade and str(now_grade))
