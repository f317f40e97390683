"""A multi-part Telegram summary that fails half way: the retry posts only what was not taken.

The real TelegramNotifier against the fake Bot API on loopback, through the delivery worker and
a real store (so the parts already accepted are what the outbox row says), and the migration
that added that column to stores written before it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from goalkeeper.delivery import Delivery
from goalkeeper.metrics import Metrics
from goalkeeper.model import OutgoingMail
from goalkeeper.notify.telegram import TelegramNotifier, split_message
from goalkeeper.state import NewMessage, StateStore
from goalkeeper.state.migrate import alembic_config
from goalkeeper_sim.telegram import FakeTelegram
from tests.recorded_sleep import RecordedSleep
from tests.test_state import on_database
from tests.test_telegram import settings

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
# Three parts: each line ~2,000 characters, so two lines fill a message near the 4,000 cut.
SUMMARY = "\n".join(f"<b>line {n}</b> " + "x" * 1900 for n in range(5))


class NoMail:
    async def send(self, mail: OutgoingMail) -> None:
        raise AssertionError("no mail in this test")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as running:
        yield running


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await StateStore.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    yield opened
    await opened.aclose()


async def test_part_two_of_three_fails_and_the_retry_posts_only_two_and_three(
    fake: FakeTelegram, store: StateStore
) -> None:
    parts = split_message(SUMMARY)
    assert len(parts) == 3
    (message,) = await store.commit_tick(
        run_id="run-1", started_at=T0, upserts=[],
        messages=[NewMessage.telegram(SUMMARY, chat_id="-1001234567890", message_id="run-1.s")],
    )  # fmt: skip
    chat = TelegramNotifier(settings(fake.url, fake.token), sleep=RecordedSleep(), attempts=2)
    delivery = Delivery(store=store, mailer=NoMail(), chat=chat, metrics=Metrics(), wait=True,
                        attempts=1, clock=lambda: T0)  # fmt: skip
    fake.fail_next(2, status=502, after=1)  # part 1 accepted, part 2 refused twice
    async with chat, delivery.running():
        (first,) = (await delivery.submit([message])).values()
        assert first is not None and "will be retried" in first
        stored = await store.message(message.id)
        assert stored is not None and (stored.status, stored.parts_sent) == ("pending", 1)
        assert [m.text for m in fake.messages] == parts[:1]

        (second,) = (await delivery.submit(await store.pending())).values()
    assert second is None
    # Each part once, in order: part 1 was not posted again.
    assert [m.text for m in fake.messages] == parts
    done = await store.message(message.id)
    assert done is not None and (done.status, done.parts_sent) == ("sent", 3)


async def test_the_notifier_skips_the_parts_it_is_told_were_accepted(fake: FakeTelegram) -> None:
    told: list[int] = []

    async def on_part(count: int) -> None:
        told.append(count)

    async with TelegramNotifier(settings(fake.url, fake.token), sleep=RecordedSleep()) as chat:
        await chat.send(SUMMARY, parts_done=2, on_part=on_part)
    assert [m.text for m in fake.messages] == split_message(SUMMARY)[2:]
    assert told == [3]


def _at_0001_with_a_pending_summary(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "0001")
    connection.execute(text("INSERT INTO runs (run_id, started_at) VALUES ('r0', '2026-12-01')"))
    connection.execute(
        text(
            "INSERT INTO outbox (run_id, channel, recipient, recipient_key, message_id, payload,"
            " finding_keys, status, attempts, created_at) VALUES ('r0', 'telegram', '-100',"
            " 'summary', 'r0.summary', '{\"text\": \"hi\"}', '[]', 'pending', 0, '2026-12-01')"
        )
    )


async def test_a_store_from_before_keeps_its_pending_messages_with_no_part_sent(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await on_database(url, _at_0001_with_a_pending_summary)
    opened = await StateStore.open(url)  # migrates 0001 -> head
    try:
        (pending,) = await opened.pending()
    finally:
        await opened.aclose()
    assert (pending.message_id, pending.parts_sent, pending.text) == ("r0.summary", 0, "hi")
