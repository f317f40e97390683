"""TelegramNotifier against the fake Bot API on 127.0.0.1: delivery, splitting, 429, secrets."""

from __future__ import annotations

import socket
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from ipaddress import ip_address

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from structlog.testing import capture_logs

from goalkeeper.config import TelegramSettings
from goalkeeper.model import DeliveryError, Finding, Owner, Target, TickReport, Transport
from goalkeeper.notify.summary import render_summary
from goalkeeper.notify.telegram import TelegramNotifier, split_message, utf16_length
from goalkeeper_sim.telegram import FakeTelegram, parse_telegram_html
from tests.recorded_sleep import RecordedSleep

NOW = datetime(2024, 5, 6, 6, 0, tzinfo=UTC)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as running:
        yield running


def settings(api_base: str, token: str, *, thread: int | None = None) -> TelegramSettings:
    return TelegramSettings(
        enabled=True,
        token=SecretStr(token),
        chat_id="-1001234567890",
        api_base=api_base,
        message_thread_id=thread,
    )


def notifier(
    fake: FakeTelegram, sleep: RecordedSleep, *, attempts: int = 4, max_retry_after: float = 60
) -> TelegramNotifier:
    return TelegramNotifier(
        settings(fake.url, fake.token, thread=7),
        sleep=sleep,
        attempts=attempts,
        max_retry_after=max_retry_after,
    )


async def test_delivers_html_to_the_configured_chat_and_thread(fake: FakeTelegram) -> None:
    async with notifier(fake, RecordedSleep()) as client:
        await client.send("<b>Goalkeeper</b> run <code>r-1</code> &amp; friends")
    (message,) = fake.messages
    assert message.chat_id == "-1001234567890"
    assert message.message_thread_id == 7
    assert message.parse_mode == "HTML"
    assert message.disable_web_page_preview
    assert message.text == "<b>Goalkeeper</b> run <code>r-1</code> &amp; friends"
    assert message.plain == "Goalkeeper run r-1 & friends"


def big_tick() -> TickReport:
    """A tick whose summary runs past 10,000 characters, with emoji and escaped names."""
    owner = Owner(name="ACME", email="admin@acme.example")
    findings = []
    for n in range(1, 181):
        target = Target(
            ip_address(f"203.0.{n // 200}.{n % 200}"), f"🔥 web-{n} <db>", "", "", "prj"
        )
        target = Target(target.address, target.server_name, f"s{n}", "p", "acme 🚀", owner)
        for port, service in ((6379, "redis"), (9200, "elasticsearch")):
            findings.append(Finding(target.address, port, Transport.TCP, service, target, NOW, NOW))
    return TickReport(
        run_id="r-big",
        environment="prod",
        started_at=NOW,
        finished_at=NOW,
        inventory_source="static",
        inventory_age_seconds=30,
        inventory_stale_reason=None,
        targets=180,
        refused=(),
        excluded=0,
        hosts_scanned=180,
        not_scanned={},
        findings=tuple(findings),
    )


async def test_a_long_summary_is_split_into_messages_telegram_accepts(
    fake: FakeTelegram,
) -> None:
    summary = render_summary(big_tick())
    assert len(summary) > 10_000
    assert utf16_length(summary) > len(summary)  # the emoji take two UTF-16 units each
    async with notifier(fake, RecordedSleep()) as client:
        await client.send(summary)
    assert len(fake.messages) >= 3
    assert fake.requests == len(fake.messages)  # every part accepted the first time
    for message in fake.messages:
        assert utf16_length(message.text) <= 4096
    # Cut only between lines: the parts put together are the whole summary, in order.
    assert "\n".join(m.plain for m in fake.messages) == parse_telegram_html(summary)


async def test_rate_limit_waits_what_telegram_asks(fake: FakeTelegram) -> None:
    sleep = RecordedSleep()
    fake.fail_next(2, retry_after=7)
    async with notifier(fake, sleep) as client:
        await client.send("hello")
    assert sleep.delays == [7, 7]
    assert fake.requests == 3
    assert [m.text for m in fake.messages] == ["hello"]


async def test_rate_limit_wait_is_capped(fake: FakeTelegram) -> None:
    sleep = RecordedSleep()
    fake.fail_next(1, retry_after=3600)
    async with notifier(fake, sleep, max_retry_after=60) as client:
        await client.send("hello")
    assert sleep.delays == [60]
    assert len(fake.messages) == 1


async def test_server_errors_are_retried_with_backoff(fake: FakeTelegram) -> None:
    sleep = RecordedSleep()
    fake.fail_next(2, status=502)
    async with notifier(fake, sleep) as client:
        await client.send("hello")
    assert len(sleep.delays) == 2
    assert 0.5 <= sleep.delays[0] <= 1.0
    assert 1.0 <= sleep.delays[1] <= 2.0
    assert len(fake.messages) == 1


async def test_persistent_server_errors_give_up_as_temporary(fake: FakeTelegram) -> None:
    fake.fail_next(10, status=500)
    async with notifier(fake, RecordedSleep(), attempts=3) as client:
        with pytest.raises(DeliveryError) as caught:
            await client.send("hello")
    assert not caught.value.permanent
    assert "gave up after 3 attempts" in caught.value.reason
    assert fake.requests == 3


async def test_html_telegram_cannot_parse_is_a_permanent_failure(fake: FakeTelegram) -> None:
    async with notifier(fake, RecordedSleep()) as client:
        with pytest.raises(DeliveryError) as caught:
            await client.send("<div>not a Telegram tag</div>")
    assert caught.value.permanent
    assert "can't parse entities" in caught.value.reason
    assert fake.requests == 1


async def test_wrong_token_fails_without_showing_the_token(fake: FakeTelegram) -> None:
    wrong = "987654:WRONG-secret-token"
    client = TelegramNotifier(settings(fake.url, wrong), sleep=RecordedSleep())
    with capture_logs() as logs, pytest.raises(DeliveryError) as caught:
        await client.send("hello")
    await client.aclose()
    assert caught.value.permanent
    assert "401" in caught.value.reason
    assert "Unauthorized" in caught.value.reason
    shown = "".join(traceback.format_exception(caught.value)) + repr(client) + repr(logs)
    assert wrong not in shown
    assert fake.messages == []


async def test_unreachable_api_fails_without_the_url_or_token() -> None:
    token = "555:UNREACHABLE-secret"
    sleep = RecordedSleep()
    # A bound socket that never listens: connections are refused, and nobody else gets the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        api = f"http://127.0.0.1:{closed.getsockname()[1]}"
        async with TelegramNotifier(settings(api, token), sleep=sleep, attempts=2) as client:
            with capture_logs() as logs, pytest.raises(DeliveryError) as caught:
                await client.send("hello")
    assert not caught.value.permanent
    assert "cannot reach Telegram" in caught.value.reason
    assert len(sleep.delays) == 1
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    shown = "".join(traceback.format_exception(caught.value)) + repr(logs)
    assert token not in shown
    assert "/bot" not in shown


async def test_aiohttp_errors_that_carry_the_url_are_cleaned() -> None:
    # An endless redirect makes aiohttp raise TooManyRedirects, whose text holds the full URL.
    async def loop_forever(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(location=request.path)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", loop_forever)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        api = f"http://127.0.0.1:{runner.addresses[0][1]}"
        token = "777:REDIRECTED-secret"
        async with TelegramNotifier(settings(api, token), sleep=RecordedSleep(), attempts=1) as c:
            with capture_logs() as logs, pytest.raises(DeliveryError) as caught:
                await c.send("hello")
    finally:
        await runner.cleanup()
    assert "TooManyRedirects" in caught.value.reason
    assert "/bot***/sendMessage" in caught.value.reason
    shown = "".join(traceback.format_exception(caught.value)) + repr(logs)
    assert token not in shown


async def test_a_session_passed_in_is_left_open(fake: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as session:
        client = TelegramNotifier(settings(fake.url, fake.token), session, sleep=RecordedSleep())
        await client.send("hello")
        await client.aclose()
        assert not session.closed
    assert len(fake.messages) == 1


def test_split_keeps_short_text_whole() -> None:
    assert split_message("<b>one</b>\ntwo") == ["<b>one</b>\ntwo"]


def test_split_closes_and_reopens_a_tag_that_spans_the_cut() -> None:
    body = "\n".join(f"line {n} &lt;x&gt;" for n in range(400))
    text = f"<b>head</b>\n<pre>{body}</pre>\ntail"
    parts = split_message(text, soft_limit=1000)
    assert len(parts) > 3
    for part in parts:
        assert utf16_length(part) <= 1000
        parse_telegram_html(part)  # raises on an unbalanced tag or a broken entity
    assert parts[1].startswith("<pre>")
    assert parts[1].endswith("</pre>")
    plain = "\n".join(parse_telegram_html(part) for part in parts)
    assert plain == parse_telegram_html(text)


@pytest.mark.parametrize(
    "line",
    [
        "&amp;" * 3000,  # entities are never cut
        "😀" * 3000,  # surrogate pairs are never cut
        "👨‍👩‍👧" * 900,  # nor a family joined by zero-width joiners
        "word " * 2000,  # plain words are cut at a space
        "<i>" + "x" * 9000 + "</i>",  # one tag around a single huge line
    ],
)
def test_split_cuts_an_overlong_line_safely(line: str) -> None:
    parts = split_message(line)
    assert len(parts) >= 2
    for part in parts:
        assert utf16_length(part) <= 4000
        parse_telegram_html(part)
    assert "".join(parse_telegram_html(p) for p in parts).replace(" ", "") == parse_telegram_html(
        line
    ).replace(" ", "")
    if line.startswith("👨"):
        assert all(part.startswith("👨") and part.endswith("👧") for part in parts)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("<div>x</div>", 'Unsupported start tag "div"'),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", "Unmatched end tag"),
        ("a &nbsp; b", "Unsupported HTML entity"),
        ("1 < 2", "reserved"),
    ],
)
def test_fake_parses_html_as_strictly_as_telegram(text: str, fault: str) -> None:
    with pytest.raises(ValueError, match=fault):
        parse_telegram_html(text)


async def test_fake_rejects_an_overlong_message_and_an_unknown_token(fake: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{fake.url}/bot{fake.token}/sendMessage"
        async with session.post(url, data={"chat_id": "1", "text": "x" * 4097}) as response:
            assert response.status == 400
            assert (await response.json())["description"] == "Bad Request: message is too long"
        async with session.post(url, data={"chat_id": "1", "text": "😀" * 2048}) as response:
            assert response.status == 200
            result = (await response.json())["result"]
            assert result["chat"] == {"id": 1, "type": "private"}
        async with session.post(f"{fake.url}/bot1:nope/sendMessage", json={}) as response:
            assert response.status == 401
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
