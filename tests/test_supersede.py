"""Never twice: a tick's mail replaces an unsent one of an earlier run to the same owner.

On the store (SQLite and PostgreSQL) and through whole ticks of the pipeline with a dispatcher
that sends nothing, so the earlier run's mails stay pending as after a crash or an outage.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from goalkeeper.lifecycle import plan_lifecycle
from goalkeeper.state import OutboxChanged, OutboxMessage, StateStore
from goalkeeper.state.supersede import SUPERSEDED_BY
from tests.test_state import DAY, T0, covering, finding, mail, record

pytest_plugins = ["tests.db"]  # the state_url and postgres_server fixtures


async def test_a_new_mail_supersedes_the_pending_one_to_the_same_owner(store: StateStore) -> None:
    a, b = record("203.0.113.5"), record("203.0.113.6")
    first = await store.commit_tick(
        run_id="run-1",
        started_at=T0,
        upserts=[a, b],
        messages=[mail("admin@acme.example", [a], "run-1"), mail("ops@beta.example", [b], "run-1")],
    )
    assert await store.waiting_mails() == {first[0].id: (a.key,), first[1].id: (b.key,)}
    second = await store.commit_tick(
        run_id="run-2",
        started_at=T0 + DAY,
        upserts=[a],
        messages=[mail("admin@acme.example", [a], "run-2")],
    )
    acme_old = await store.message(first[0].id)
    assert acme_old is not None
    # Kept, never deleted: the console shows what replaced it.
    assert acme_old.status == "superseded"
    assert acme_old.last_error == f"{SUPERSEDED_BY}run-2"
    pending = await store.pending()
    assert [(m.run_id, m.recipient_key) for m in pending] == [
        ("run-1", "ops@beta.example"),  # no new mail for Beta: its waiting one still goes
        ("run-2", "admin@acme.example"),
    ]
    assert [m.id for m in second] == [pending[1].id]
    # A retried commit of the same run supersedes nothing of its own.
    again = await store.commit_tick(
        run_id="run-2",
        started_at=T0 + DAY,
        upserts=[a],
        messages=[mail("admin@acme.example", [a], "run-2")],
    )
    assert [m.status for m in again] == ["pending"]


async def test_sent_and_failed_mails_are_never_superseded(store: StateStore) -> None:
    a = record("203.0.113.5")
    sent, failed = await store.commit_tick(
        run_id="run-1",
        started_at=T0,
        upserts=[a],
        messages=[mail("admin@acme.example", [a]), mail("not-found:p9", [a])],
    )
    await store.mark_sent(sent.id, now=T0)
    await store.mark_failed(failed.id, reason="550 no such user", now=T0)
    await store.commit_tick(
        run_id="run-2",
        started_at=T0 + DAY,
        upserts=[a],
        messages=[mail("admin@acme.example", [a], "run-2"), mail("not-found:p9", [a], "run-2")],
    )
    statuses = [m.status for m in [await store.message(sent.id), await store.message(failed.id)]
                if m is not None]  # fmt: skip
    assert statuses == ["sent", "failed"]


async def test_a_second_tick_makes_one_report_per_owner_with_everything_still_waiting(
    store: StateStore,
) -> None:
    """The pipeline's rule end to end on the store: run 2 scanned only one of run 1's hosts."""
    one, two = finding("203.0.113.5"), finding("203.0.113.6")
    plan = plan_lifecycle({}, [one, two], covering({one.address, two.address}), now=T0,
                          reminder_days=1, notify_resolved=True)  # fmt: skip
    await store.commit_tick(
        run_id="run-1",
        started_at=T0,
        upserts=plan.upserts,
        messages=[mail("admin@acme.example", list(plan.upserts))],
    )
    waiting = {k for keys in (await store.waiting_mails()).values() for k in keys}
    later = T0 + DAY / 24  # an hour later: no reminder due, only the waiting mail makes it due
    previous = await store.load_findings()
    plan = plan_lifecycle(previous, [one], covering({one.address}), now=later, reminder_days=1,
                          notify_resolved=True, pending=waiting)  # fmt: skip
    told = sorted(str(f.address) for f in plan.to_notify)
    assert told == ["203.0.113.5", "203.0.113.6"]  # the unscanned host is carried over
    await store.commit_tick(
        run_id="run-2",
        started_at=later,
        upserts=plan.upserts,
        messages=[mail("admin@acme.example", [r for r in previous.values()], "run-2")],
    )
    assert _owners(await store.pending()) == [("run-2", "admin@acme.example")]


async def test_a_commit_that_counted_on_a_mail_sent_meanwhile_writes_nothing(
    store: StateStore,
) -> None:
    a = record("203.0.113.5")
    (old,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[a], messages=[mail("admin@acme.example", [a])]
    )
    waiting = await store.waiting_mails()  # what run 2 plans with
    await store.mark_sent(old.id, now=T0)  # ... and then it goes out, before run 2 commits
    with pytest.raises(OutboxChanged) as refused:
        await store.commit_tick(
            run_id="run-2",
            started_at=T0 + DAY,
            upserts=[a],
            messages=[mail("admin@acme.example", [a], "run-2")],
            still_pending=waiting,
        )
    assert refused.value.sent == [old.id]
    assert await store.pending() == []  # nothing of run 2 was written
    assert await store.waiting_mails() == {}


def _owners(messages: Sequence[OutboxMessage]) -> list[tuple[str, str]]:
    return [(m.run_id, m.recipient_key) for m in messages]
