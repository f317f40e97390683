"""The delivery workers' rules against a real store, with a fake mailer and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from goalkeeper.delivery import Delivery
from goalkeeper.metrics import Metrics
from goalkeeper.model import DeliveryError, OutgoingMail
from goalkeeper.state import NewMessage, OutboxMessage, StateStore

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)


class Mailer:
    def __init__(self, *failures: DeliveryError) -> None:
        self.failures = list(failures)
        self.sent: list[str] = []

    async def send(self, mail: OutgoingMail) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(mail.recipient)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await StateStore.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    yield opened
    await opened.aclose()


async def stored_mail(store: StateStore) -> OutboxMessage:
    mail = OutgoingMail(recipient="a@b.example", sender="ops@p.example", subject="s",
                        text="t", html="<p>t</p>", message_id="<m1@p.example>")  # fmt: skip
    (message,) = await store.commit_tick(
        run_id="r1", started_at=T0, upserts=[],
        messages=[NewMessage.email(mail, recipient_key="a@b.example")],
    )  # fmt: skip
    return message


async def deliver(store: StateStore, mailer: Mailer, *, now: datetime) -> dict[int, str | None]:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    metrics = Metrics()
    delivery = Delivery(store=store, mailer=mailer, chat=None, metrics=metrics, wait=True,
                        sleep=fake_sleep, clock=lambda: now)  # fmt: skip
    async with delivery.running():
        return await delivery.submit(await store.pending())


async def test_sent_once_and_marked(store: StateStore) -> None:
    message = await stored_mail(store)
    mailer = Mailer()
    assert await deliver(store, mailer, now=T0) == {message.id: None}
    assert mailer.sent == ["a@b.example"]
    assert await store.pending() == []
    assert await deliver(store, mailer, now=T0) == {}  # nothing left to send
    assert mailer.sent == ["a@b.example"]


async def test_temporary_failures_leave_it_pending_for_the_next_pass(store: StateStore) -> None:
    message = await stored_mail(store)
    mailer = Mailer(
        DeliveryError("451 busy", permanent=False), DeliveryError("451 busy", permanent=False)
    )
    (result,) = (await deliver(store, mailer, now=T0 + timedelta(minutes=5))).values()
    assert result is not None
    assert "will be retried" in result
    (pending,) = await store.pending()
    assert pending.id == message.id
    assert pending.attempts == 2
    assert (await deliver(store, mailer, now=T0 + timedelta(minutes=10))) == {message.id: None}
    assert mailer.sent == ["a@b.example"]


async def test_permanent_refusal_fails_at_once(store: StateStore) -> None:
    await stored_mail(store)
    mailer = Mailer(DeliveryError("550 no such user", permanent=True))
    (result,) = (await deliver(store, mailer, now=T0)).values()
    assert result == "550 no such user"
    assert await store.pending() == []
    (failed,) = await store.failed_since(T0)
    assert failed.last_error == "550 no such user"
    assert failed.attempts == 1


async def test_a_day_of_temporary_failures_is_given_up(store: StateStore) -> None:
    await stored_mail(store)
    mailer = Mailer(DeliveryError("connection refused", permanent=False))
    (result,) = (await deliver(store, mailer, now=T0 + timedelta(days=1, minutes=1))).values()
    assert result is not None
    assert result.startswith("gave up after 1 attempts over a day")
    assert await store.pending() == []


async def test_a_reference_is_read_from_the_store_and_sent_only_while_pending(
    store: StateStore,
) -> None:
    reference = await stored_mail(store)  # what commit_tick hands the pipeline: no payload
    assert not reference.loaded
    mailer = Mailer()
    delivery = Delivery(store=store, mailer=mailer, chat=None, metrics=Metrics(), wait=True)
    async with delivery.running():
        assert await delivery.submit([reference]) == {reference.id: None}
        assert mailer.sent == ["a@b.example"]
        # A stale reference to a message sent meanwhile (by another pass) is not sent again.
        again = await delivery.submit([reference])
    assert again == {reference.id: "not sent: already sent"}
    assert mailer.sent == ["a@b.example"]


async def test_delivery_time_counts_from_the_commit_to_the_relay_accepting(
    store: StateStore,
) -> None:
    await stored_mail(store)  # committed at T0
    metrics = Metrics()

    async def no_sleep(seconds: float) -> None:
        pass

    delivery = Delivery(store=store, mailer=Mailer(DeliveryError("busy", permanent=False)),
                        chat=None, metrics=metrics, wait=True, sleep=no_sleep,
                        clock=lambda: T0 + timedelta(seconds=42))  # fmt: skip
    async with delivery.running():
        assert list((await delivery.submit(await store.pending())).values()) == [None]
    name, email = "goalkeeper_delivery_duration_seconds", {"channel": "email"}
    assert metrics.registry.get_sample_value(f"{name}_count", email) == 1  # the retry is in it
    assert metrics.registry.get_sample_value(f"{name}_sum", email) == 42
