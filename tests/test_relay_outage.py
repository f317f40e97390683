"""A relay that refuses everyone is an outage of the relay, not of every address.

A real SMTP server (aiosmtpd, goalkeeper_sim.smtp) answers 550 to every recipient for a while,
then recovers. Before, each mail was marked permanently failed and never tried again; now, once
RELAY_OUTAGE_AFTER distinct recipients are refused in a row with the same code, the messages go
back to pending, the pass stops and the worker backs off; the next pass after recovery delivers
each exactly once. One address refused among good ones is still failed at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from goalkeeper.config import EmailSettings
from goalkeeper.delivery import Delivery
from goalkeeper.metrics import Metrics
from goalkeeper.model import OutgoingMail
from goalkeeper.notify.email import KeptConnection, SmtpMailer
from goalkeeper.relay import RELAY_OUTAGE_AFTER, RefusalStreak
from goalkeeper.state import NewMessage, StateStore
from goalkeeper_sim.smtp import SmtpSink

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
MAILERS: dict[Delivery, SmtpMailer] = {}  # closed after each pass: it keeps its connection
RECIPIENTS = [f"owner{n}@customer{n}.example" for n in range(6)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await StateStore.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    yield opened
    await opened.aclose()


def mail(number: int, recipient: str, key: str | None = None) -> NewMessage:
    rendered = OutgoingMail(
        recipient=recipient,
        sender="ops@provider.example",
        subject=f"report {number}",
        text="t",
        html="<p>t</p>",
        message_id=f"<m{number}@provider.example>",
    )
    return NewMessage.email(rendered, recipient_key=key or recipient)


async def pending_mails(store: StateStore, recipients: list[str]) -> None:
    messages = [mail(n, r) for n, r in enumerate(recipients)]
    await store.commit_tick(run_id="r1", started_at=T0, upserts=[], messages=messages)


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def delivery_for(store: StateStore, smtp: SmtpSink, sleeps: Sleeps, metrics: Metrics) -> Delivery:
    settings = EmailSettings(host=smtp.host, port=smtp.port, starttls=False, timeout=5)
    mailer = SmtpMailer(settings, kept=KeptConnection(), attempts=1, sleep=sleeps)
    delivery = Delivery(store=store, mailer=mailer, chat=None, metrics=metrics, wait=True,
                        sleep=sleeps, clock=lambda: T0)  # fmt: skip
    MAILERS[delivery] = mailer
    return delivery


async def one_pass(delivery: Delivery) -> None:
    """What the daemon does every few minutes: send what the store holds pending."""
    async with delivery.running():
        await delivery.resend_pending()
    await MAILERS[delivery].aclose()


async def test_a_relay_refusing_everyone_keeps_the_mails_pending_until_it_recovers(
    store: StateStore,
) -> None:
    await pending_mails(store, RECIPIENTS)
    sleeps, metrics = Sleeps(), Metrics()
    async with SmtpSink() as smtp:
        delivery = delivery_for(store, smtp, sleeps, metrics)
        # The relay refuses everyone: the first pass's streak, and the next pass's first try.
        smtp.fail_next(550, count=RELAY_OUTAGE_AFTER + 1)
        await one_pass(delivery)
        assert await store.failed() == []
        assert len(await store.pending()) == len(RECIPIENTS)
        assert smtp.commands("RCPT") == RELAY_OUTAGE_AFTER  # the pass stopped there
        assert all(m.attempts == 0 for m in await store.pending())  # back as they were

        await one_pass(delivery)  # still refusing: one try, and the pass stops again
        assert smtp.commands("RCPT") == RELAY_OUTAGE_AFTER + 1
        assert await store.failed() == []
        assert len(await store.pending()) == len(RECIPIENTS)
        assert len(sleeps.seconds) == 2 and sleeps.seconds[1] > sleeps.seconds[0] / 2

        await one_pass(delivery)  # recovered
        assert await store.pending() == [] and await store.failed() == []
        assert sorted(m.rcpt_tos[0] for m in smtp.messages) == sorted(RECIPIENTS)
    assert metrics.registry.get_sample_value("goalkeeper_relay_outages_total") == 2


async def test_one_refused_address_among_good_ones_fails_at_once(store: StateStore) -> None:
    await pending_mails(store, RECIPIENTS[:4])
    sleeps, metrics = Sleeps(), Metrics()
    async with SmtpSink() as smtp:
        smtp.fail_next(550, count=RELAY_OUTAGE_AFTER - 1)  # fewer than an outage, then fine
        await one_pass(delivery_for(store, smtp, sleeps, metrics))
        failed = await store.failed()
        assert [m.recipient for m in failed] == RECIPIENTS[: RELAY_OUTAGE_AFTER - 1]
        assert all(m.last_error and "550" in m.last_error for m in failed)
        assert (
            sorted(m.rcpt_tos[0] for m in smtp.messages) == RECIPIENTS[RELAY_OUTAGE_AFTER - 1 : 4]
        )
    assert await store.pending() == []
    assert sleeps.seconds == []
    assert metrics.registry.get_sample_value("goalkeeper_relay_outages_total") == 0


async def test_the_same_recipient_refused_twice_is_not_an_outage(store: StateStore) -> None:
    same = ["one@customer.example"] * RELAY_OUTAGE_AFTER
    messages = [mail(n, r, key=f"{r}#{n}") for n, r in enumerate(same)]
    await store.commit_tick(run_id="r1", started_at=T0, upserts=[], messages=messages)
    sleeps, metrics = Sleeps(), Metrics()
    async with SmtpSink() as smtp:
        smtp.fail_next(550, count=RELAY_OUTAGE_AFTER)
        await one_pass(delivery_for(store, smtp, sleeps, metrics))
    assert len(await store.failed()) == RELAY_OUTAGE_AFTER
    assert metrics.registry.get_sample_value("goalkeeper_relay_outages_total") == 0


@pytest.mark.parametrize(
    ("refusals", "outage_at"),
    [
        ([(1, "a", 550), (2, "b", 550), (3, "c", 550)], 3),  # distinct, same code: the relay
        ([(1, "a", 550), (2, "b", 554), (3, "c", 550)], None),  # codes differ: the addresses
        ([(1, "a", 550), (2, "a", 550), (3, "b", 550), (4, "c", 550)], 4),  # a repeat is no news
        ([(1, "a", 550), (2, "b", None), (3, "c", 550)], None),  # no code: not comparable
        ([(1, "a", 554), (2, "b", 550), (3, "c", 550), (4, "d", 550)], 4),  # a new streak
    ],
)
def test_a_streak_of_refusals_is_an_outage_only_when_everyone_is_refused_alike(
    refusals: list[tuple[int, str, int | None]], outage_at: int | None
) -> None:
    streak = RefusalStreak(after=3)
    found = [n for n, to, code in refusals if streak.refused(n, to, code)]
    assert found == ([] if outage_at is None else [outage_at])


def test_an_outage_lasts_until_a_delivery_and_a_temporary_failure_breaks_a_streak() -> None:
    streak = RefusalStreak(after=2)
    assert streak.refused(1, "a", 550) == []
    streak.broken()  # a 451 in between: the next refusal starts over
    assert streak.refused(2, "b", 550) == []
    assert streak.refused(3, "c", 550) == [2, 3]
    assert streak.holds(550) and not streak.holds(554) and not streak.holds(None)
    assert (streak.outage_started(), streak.outage_started()) == (0, 1)
    streak.delivered()
    assert not streak.holds(550) and streak.outage_started() == 0
