"""Logging: JSON lines on stderr, library logs through the same renderer, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from goalkeeper import logs

SECRET = "hunter2-very-secret"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    logs.configure(level="info", fmt="json", secrets=[SECRET, "abc"], stream=buffer)
    yield buffer
    logs.configure(level="warning", fmt="console", secrets=[], stream=io.StringIO())
    structlog.contextvars.clear_contextvars()


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_secrets_are_masked_everywhere(stream: io.StringIO) -> None:
    log = logs.get_logger("test")
    log.info("plain", value=SECRET, nested={"list": [f"x{SECRET}y"]})
    log.info(f"in the event {SECRET}")
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("boom")
    logging.getLogger("aiohttp.client").warning(
        "GET https://api.telegram.org/bot123456:AAE-xyz/send"
    )
    log.info("header", header="Authorization: Bearer tok_live_987654")
    log.info("url", url="postgresql+asyncpg://gk:pa55word@db/gk")
    text = stream.getvalue()
    assert SECRET not in text
    assert "AAE-xyz" not in text and "/bot***" in text
    assert "tok_live_987654" not in text
    assert "pa55word" not in text
    events = [line["event"] for line in lines(stream)]
    assert "boom" in events and len(events) == 6


def test_context_is_bound_to_every_line_and_library_logs_are_json(stream: io.StringIO) -> None:
    logs.bind(tick="20261127T060000Z-abc123")
    logs.get_logger("goalkeeper.test").info("one")
    logging.getLogger("apscheduler.scheduler").warning("two")
    logs.unbind("tick")
    logs.get_logger("goalkeeper.test").info("three")
    got = lines(stream)
    assert [line.get("tick") for line in got] == [
        "20261127T060000Z-abc123",
        "20261127T060000Z-abc123",
        None,
    ]
    assert got[1]["logger"] == "apscheduler.scheduler" and got[1]["level"] == "warning"
    assert all("timestamp" in line for line in got)


def test_very_short_values_are_not_treated_as_secrets() -> None:
    # Masking "abc" would shred ordinary words; config values that short are not secrets.
    redactor = logs.Redactor(["abc", SECRET])
    assert redactor.scrub_text(f"abcdef {SECRET}") == "abcdef ***"


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (
            "  (sqlite3.OperationalError) no such table\n[SQL: SELECT 1]",
            "(sqlite3.OperationalError) no such table",
        ),
        ("", "(no message)"),
        ("x" * 400, "x" * 300),
        (ValueError("bad\nworse"), "bad"),
    ],
)
def test_first_line_keeps_one_bounded_line(message: object, shown: str) -> None:
    assert logs.first_line(message) == shown
