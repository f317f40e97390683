"""The HTTP face on its own: probe status codes, the admin API's bearer token, hostile clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from goalkeeper.health import Health
from goalkeeper.metrics import Metrics
from goalkeeper.probes import HttpServer, build_app, start_http


class FakeSchedule:
    running = True

    def next_run_time(self) -> datetime | None:
        return None

    def overdue(self, now: datetime) -> float | None:
        return None


class FakeStoreCheck:
    problem: str | None = None

    async def check(self) -> str | None:
        return self.problem


def health(schedule: FakeSchedule | None = None) -> Health:
    started = Health(
        schedule=schedule or FakeSchedule(),
        store=FakeStoreCheck(),
        max_tick_seconds=lambda: 3600.0,
        clock=lambda: datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
        monotonic=lambda: 0.0,
    )
    started.started = True
    return started


class FakeControls:
    def __init__(self) -> None:
        self.busy = False
        self.ticks: list[str] = []
        self.retries: list[tuple[str | None, list[int] | None, str]] = []

    def request_tick(self, reason: str) -> str | None:
        if self.busy:
            return None
        self.ticks.append(reason)
        return "run-1"

    async def findings(self, *, include_resolved: bool) -> list[dict[str, Any]]:
        return [{"address": "127.0.0.9", "resolved_included": include_resolved}]

    async def retry_failed(
        self, *, channel: str | None, ids: list[int] | None, who: str
    ) -> dict[str, Any]:
        self.retries.append((channel, ids, who))
        return {"moved": ids or [], "skipped": {}}


async def serve(
    controls: FakeControls, token: str | None, *, flags: Health | None = None
) -> HttpServer:
    app = build_app(
        controls, health=flags or health(), registry=Metrics().registry, admin_token=lambda: token
    )
    return await start_http(app, host="127.0.0.1", port=0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_probes_reflect_the_daemons_flags(session: aiohttp.ClientSession) -> None:
    schedule = FakeSchedule()
    flags = health(schedule)
    server = await serve(FakeControls(), None, flags=flags)
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with session.get(base + "/healthz") as r:
            assert r.status == 200
        schedule.running, flags.started = False, False
        async with session.get(base + "/healthz") as r:
            assert r.status == 503
            assert (await r.json())["problems"] == ["scheduler not running"]
        async with session.get(base + "/readyz") as r:
            assert r.status == 503
        async with session.get(base + "/metrics") as r:
            assert r.status == 200
            assert "goalkeeper_ticks_total" in await r.text()
    finally:
        await server.aclose()


async def test_admin_api_is_off_without_a_token(session: aiohttp.ClientSession) -> None:
    controls = FakeControls()
    server = await serve(controls, None)
    try:
        async with session.post(
            f"http://127.0.0.1:{server.port}/scan", headers={"Authorization": "Bearer "}
        ) as r:
            assert r.status == 404
        assert controls.ticks == []
    finally:
        await server.aclose()


async def test_admin_api_needs_the_exact_bearer_token(session: aiohttp.ClientSession) -> None:
    controls = FakeControls()
    server = await serve(controls, "s3cret-admin-token")
    base = f"http://127.0.0.1:{server.port}"
    good = {"Authorization": "Bearer s3cret-admin-token"}
    try:
        for headers in (
            {},
            {"Authorization": "Bearer s3cret"},
            {"Authorization": "s3cret-admin-token"},
        ):
            async with session.post(base + "/scan", headers=headers) as r:
                assert r.status == 401
        async with session.post(base + "/scan", headers=good) as r:
            assert r.status == 202
            assert (await r.json())["run_id"] == "run-1"
        controls.busy = True
        async with session.post(base + "/scan", headers=good) as r:
            assert r.status == 409
        async with session.get(base + "/findings?all=1", headers=good) as r:
            assert r.status == 200
            assert (await r.json())["findings"][0]["resolved_included"] is True
        assert controls.ticks == ["api"]
    finally:
        await server.aclose()


async def test_outbox_retry_is_an_admin_call_that_checks_its_arguments(
    session: aiohttp.ClientSession,
) -> None:
    controls = FakeControls()
    server = await serve(controls, "s3cret-admin-token")
    base = f"http://127.0.0.1:{server.port}/outbox/retry"
    good = {"Authorization": "Bearer s3cret-admin-token"}
    try:
        async with session.post(base, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        async with session.post(base + "?channel=fax", headers=good) as r:
            assert r.status == 400
            assert "email or telegram" in (await r.json())["error"]
        async with session.post(base + "?id=x", headers=good) as r:
            assert r.status == 400
        assert controls.retries == []
        async with session.post(base + "?channel=email&id=3&id=5", headers=good) as r:
            assert r.status == 200
            assert (await r.json())["moved"] == [3, 5]
        async with session.post(base, headers=good) as r:
            assert r.status == 200
        assert [(c, i) for c, i, _ in controls.retries] == [("email", [3, 5]), (None, None)]
        assert all(who.startswith("api from 127.0.0.1") for _, _, who in controls.retries)
    finally:
        await server.aclose()


async def test_a_non_utf8_authorization_header_is_refused_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    controls = FakeControls()
    server = await serve(controls, "s3cret-admin-token")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /scan HTTP/1.1\r\nHost: goalkeeper\r\nAuthorization: Bearer \xff\xfe\xe9\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
    finally:
        await server.aclose()
    assert status_line.startswith(b"HTTP/1.1 401 "), status_line
    assert controls.ticks == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


SLOW_CLIENTS = 50
CUT_OFF_GUARD_SECONDS = 15  # far above the 0.5 s bound: only so a failure cannot hang


async def test_slow_header_senders_are_cut_off_and_probes_still_answer(
    session: aiohttp.ClientSession,
) -> None:
    app = build_app(
        FakeControls(), health=health(), registry=Metrics().registry, admin_token=lambda: None
    )
    server = await start_http(app, host="127.0.0.1", port=0, request_timeout=0.5)
    request = b"GET /healthz HTTP/1.1\r\nHost: goalkeeper\r\nX-Padding: " + b"a" * 4000

    async def slow_client(connected: asyncio.Event) -> bool:
        """Send a header a byte at a time; True once the server has closed the connection."""
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        connected.set()

        async def trickle() -> None:
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)  # the attack's pace, not a wait for anything

        dribbling = asyncio.create_task(trickle())
        try:
            return await reader.read() == b""
        except ConnectionResetError:
            return True
        finally:
            dribbling.cancel()
            await asyncio.gather(dribbling, return_exceptions=True)
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)

    try:
        connected = [asyncio.Event() for _ in range(SLOW_CLIENTS)]
        async with asyncio.timeout(CUT_OFF_GUARD_SECONDS):
            clients = [asyncio.create_task(slow_client(event)) for event in connected]
            await asyncio.gather(*(event.wait() for event in connected))
            async with session.get(f"http://127.0.0.1:{server.port}/healthz") as r:
                assert r.status == 200  # answered while the fifty dribble
            cut_off = await asyncio.gather(*clients)
    finally:
        await server.aclose()
    assert cut_off == [True] * SLOW_CLIENTS
