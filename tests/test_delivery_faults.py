"""Delivery under faults: a channel that comes back, a mail superseded while it is retried, and
a worker that loses its cancellation at shutdown. A real store, fake senders, no real sleeps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from goalkeeper.delivery import Delivery
from goalkeeper.metrics import Metrics
from goalkeeper.model import DeliveryError, OutgoingMail
from goalkeeper.state import NewMessage, OutboxMessage, StateStore
from tests.test_delivery import T0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await StateStore.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    yield opened
    await opened.aclose()


def new_mail(key: str, run: str = "r1") -> NewMessage:
    mail = OutgoingMail(recipient=key, sender="ops@p.example", subject=f"report {run}", text="t",
                        html="<p>t</p>", message_id=f"<{run}.{key}@p.example>")  # fmt: skip
    return NewMessage.email(mail, recipient_key=key)


async def stored(store: StateStore, *keys: str, run: str = "r1") -> list[OutboxMessage]:
    return await store.commit_tick(
        run_id=run, started_at=T0, upserts=[], messages=[new_mail(k, run) for k in keys]
    )


class Outage:
    """An SMTP server that is down until told otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.sent: list[str] = []

    async def send(self, mail: OutgoingMail) -> None:
        if self.down:
            raise DeliveryError("connection refused", permanent=False)
        self.sent.append(mail.message_id)


async def no_sleep(seconds: float) -> None:
    pass


async def test_what_waited_goes_out_as_soon_as_the_channel_recovers(store: StateStore) -> None:
    messages = await stored(store, "a@x.example", "b@x.example", "c@x.example")
    mailer = Outage()
    delivery = Delivery(store=store, mailer=mailer, chat=None, metrics=Metrics(), wait=True,
                        attempts=1, probe_seconds=(0.01, 0.05), sleep=no_sleep,
                        clock=lambda: T0)  # fmt: skip
    async with delivery.running():
        results = await delivery.submit(messages)
        assert all(r is not None and "will be retried" in r for r in results.values())
        mailer.down = False
        # An hour to the next regular pass; the probe finds the channel back long before.
        async with asyncio.timeout(30):
            await delivery.wait_for_retry(3600)
        assert mailer.sent == ["<r1.a@x.example@p.example>"]  # the probe: the oldest one
        await delivery.resend_pending()
    assert sorted(mailer.sent) == sorted(m.message_id for m in messages)
    assert await store.pending() == []


async def test_a_mail_superseded_between_attempts_is_not_sent(store: StateStore) -> None:
    (old,) = await stored(store, "a@x.example")
    mailer = Outage()

    async def backoff(seconds: float) -> None:
        # A new tick commits its report for the same owner while this one waits to retry.
        await stored(store, "a@x.example", run="r2")
        mailer.down = False

    delivery = Delivery(store=store, mailer=mailer, chat=None, metrics=Metrics(), wait=True,
                        attempts=2, sleep=backoff, clock=lambda: T0)  # fmt: skip
    async with delivery.running():
        assert await delivery.submit([old]) == {old.id: "not sent: already superseded"}
        (new,) = await store.pending()
        assert await delivery.submit([new]) == {new.id: None}
    assert mailer.sent == ["<r2.a@x.example@p.example>"]


class LosesCancel:
    """A send that swallows one cancellation and waits on, as aiosmtplib's `wait_for` did on
    Python 3.11 when the cancel arrived as the inner wait finished."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def send(self, mail: OutgoingMail) -> None:
        self.started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await asyncio.Event().wait()


async def test_leaving_running_has_a_deadline_when_a_send_loses_its_cancel(
    store: StateStore,
) -> None:
    (message,) = await stored(store, "a@x.example")
    mailer = LosesCancel()
    delivery = Delivery(
        store=store, mailer=mailer, chat=None, metrics=Metrics(), wait=False, clock=lambda: T0
    )
    async with asyncio.timeout(30):  # without deadlines this block never ends
        async with delivery.running(drain_seconds=0.05, stop_seconds=5):
            await delivery.submit([message])
            await mailer.started.wait()
    (pending,) = await store.pending()  # not sent: it waits for the next run
    assert pending.id == message.id
