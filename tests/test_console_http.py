"""The staff console over real HTTP on 127.0.0.1: access, cookies, CSRF, headers, escaping, exports.

The app is the daemon's own (goalkeeper.probes.build_app with the console mounted) on a real
SQLite store filled through the store's writers (tests.console_world).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from goalkeeper.console import Console
from goalkeeper.console.auth import COOKIE, SESSION_SECONDS, Sessions
from goalkeeper.metrics import Metrics
from goalkeeper.probes import HttpServer, build_app, start_http
from goalkeeper.state import StateError, StateStore
from tests.console_world import HOSTILE_NAME, T0, WORLD_RULE_CAUSE, record, tick
from tests.test_probes import FakeControls, health

TOKEN = "console-test-token-0123456789"
HTML = {"Accept": "text/html,application/xhtml+xml"}


@dataclass
class Served:
    base: str
    console: Console
    controls: FakeControls
    tokens: list[str | None]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with StateStore.opened(f"sqlite+aiosqlite:///{tmp_path}/state.db") as opened:
        await tick(
            opened,
            "run-1",
            T0,
            [
                record("203.0.113.5", cause=WORLD_RULE_CAUSE),
                record("203.0.113.6", server_name=HOSTILE_NAME, owner_name="=HYPERLINK(1)"),
                record("203.0.113.7", exception=True),
            ],
            mail_to="alice@customer.example",
            not_scanned={"203.0.113.9": "the host did not answer"},
        )
        yield opened


@pytest.fixture
async def served(store: StateStore) -> AsyncIterator[Served]:
    tokens: list[str | None] = [TOKEN]
    controls = FakeControls()
    console = Console(
        store.browse, admin_token=lambda: tokens[0], clock=lambda: T0, resend_seconds=300
    )
    app = build_app(
        controls,
        health=health(),
        registry=Metrics().registry,
        admin_token=lambda: tokens[0],
        console=console,
    )
    server: HttpServer = await start_http(app, host="127.0.0.1", port=0)
    try:
        yield Served(f"http://127.0.0.1:{server.port}", console, controls, tokens)
    finally:
        await server.aclose()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    # A cookie jar that keeps cookies for a bare IP address (aiohttp's default does not).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def sign_in(client: aiohttp.ClientSession, base: str) -> aiohttp.ClientResponse:
    async with client.post(
        base + "/console/login", data={"token": TOKEN}, allow_redirects=False
    ) as response:
        return response


async def test_without_a_cookie_or_token_browsers_are_sent_to_login_and_others_get_401(
    served: Served, client: aiohttp.ClientSession
) -> None:
    for path in ("/console/", "/console/findings", "/console/findings/203.0.113.5_6379_tcp",
                 "/console/owners", "/console/outbox", "/console/ticks",
                 "/console/findings?format=csv"):  # fmt: skip
        async with client.get(served.base + path, headers=HTML, allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/console/login"), path
        async with client.get(served.base + path, allow_redirects=False) as r:
            assert r.status == 401, path
            assert HOSTILE_NAME not in await r.text()
        wrong = {"Authorization": "Bearer not-the-token"}
        async with client.get(served.base + path, headers=wrong, allow_redirects=False) as r:
            assert r.status == 401, path


async def test_the_console_is_off_without_an_admin_token(
    served: Served, client: aiohttp.ClientSession
) -> None:
    served.tokens[0] = None
    for path in ("/console/", "/console/login", "/console/static/console.css"):
        async with client.get(served.base + path, headers=HTML, allow_redirects=False) as r:
            assert r.status == 404, path


async def test_the_bearer_token_opens_every_page(
    served: Served, client: aiohttp.ClientSession
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/console/", "/console/findings", "/console/owners", "/console/outbox",
                 "/console/ticks", "/console/findings/203.0.113.5_6379_tcp"):  # fmt: skip
        async with client.get(served.base + path, headers=bearer) as r:
            assert r.status == 200, path
            assert TOKEN not in await r.text()


async def test_login_sets_a_signed_httponly_strict_cookie_with_an_expiry(
    served: Served, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        served.base + "/console/login", data={"token": "wrong"}, allow_redirects=False
    ) as r:
        assert r.status == 401
        assert "not right" in await r.text()
        assert COOKIE not in r.cookies
    response = await sign_in(client, served.base)
    assert (response.status, response.headers["Location"]) == (303, "/console/")
    cookie = response.cookies[COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["max-age"] == str(SESSION_SECONDS)
    assert not cookie["secure"]  # plain http on loopback; see the https case below
    assert TOKEN not in cookie.value
    async with client.get(served.base + "/console/", headers=HTML) as r:
        assert r.status == 200
        assert "Open findings, last 30 days" in await r.text()


async def test_the_cookie_is_secure_behind_an_https_ingress(
    served: Served, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        served.base + "/console/login",
        data={"token": TOKEN},
        headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False,
    ) as r:
        assert r.cookies[COOKIE]["secure"] is True


def test_a_session_expires_and_a_new_token_ends_every_session() -> None:
    now = [1_000_000.0]
    token = ["first-token"]
    sessions = Sessions(lambda: token[0], clock=lambda: now[0])
    cookie = sessions.new_cookie()

    def carrying(value: str) -> web.Request:
        return make_mocked_request("GET", "/console/", headers={"Cookie": f"{COOKIE}={value}"})

    assert sessions.session_of(carrying(cookie)) is not None
    now[0] += SESSION_SECONDS + 1
    assert sessions.session_of(carrying(cookie)) is None
    now[0] -= SESSION_SECONDS
    assert sessions.session_of(carrying(cookie)) is not None
    tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    assert sessions.session_of(carrying(tampered)) is None
    token[0] = "second-token"
    assert sessions.session_of(carrying(cookie)) is None


async def test_scan_now_needs_the_sessions_csrf_token(
    served: Served, client: aiohttp.ClientSession
) -> None:
    await sign_in(client, served.base)
    async with client.get(served.base + "/console/", headers=HTML) as r:
        page = await r.text()
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match is not None
    async with client.post(
        served.base + "/scan", data={"csrf": "0" * 64}, allow_redirects=False
    ) as r:
        assert r.status == 403
    async with client.post(served.base + "/scan", data={}, allow_redirects=False) as r:
        assert r.status == 403
    assert served.controls.ticks == []
    async with client.post(
        served.base + "/scan", data={"csrf": match.group(1)}, allow_redirects=False
    ) as r:
        assert (r.status, r.headers["Location"]) == (303, "/console/ticks?started=run-1")
    assert served.controls.ticks == ["console"]
    served.controls.busy = True
    async with client.post(
        served.base + "/scan", data={"csrf": match.group(1)}, allow_redirects=False
    ) as r:
        assert r.headers["Location"] == "/console/ticks?busy=1"
    # Another session's token is refused: the CSRF token is bound to the session.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        await sign_in(other, served.base)
        async with other.post(
            served.base + "/scan", data={"csrf": match.group(1)}, allow_redirects=False
        ) as r:
            assert r.status == 403


async def test_post_scan_with_the_bearer_still_answers_the_api(
    served: Served, client: aiohttp.ClientSession
) -> None:
    async with client.post(
        served.base + "/scan", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as r:
        assert r.status == 202
        assert (await r.json())["run_id"] == "run-1"
    async with client.post(served.base + "/scan") as r:
        assert r.status == 401


async def test_every_page_sets_a_csp_without_inline_script_and_escapes_customer_text(
    served: Served, client: aiohttp.ClientSession
) -> None:
    await sign_in(client, served.base)
    for path in ("/console/", "/console/findings", "/console/findings/203.0.113.6_6379_tcp",
                 "/console/owners", "/console/outbox", "/console/ticks",
                 "/console/login"):  # fmt: skip
        async with client.get(served.base + path, headers=HTML) as r:
            assert r.status == 200, path
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert r.headers["Cache-Control"] == "no-store"
            body = await r.text()
            assert "<script" not in body, path
            assert TOKEN not in body
    async with client.get(served.base + "/console/findings", headers=HTML) as r:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in await r.text()
    async with client.get(
        served.base + "/console/findings/203.0.113.7_6379_tcp", headers=HTML
    ) as r:
        assert "a honeypot &lt;b&gt;on purpose&lt;/b&gt;" in await r.text()


async def test_csv_export_is_every_match_with_formulas_defused(
    served: Served, client: aiohttp.ClientSession
) -> None:
    await sign_in(client, served.base)
    async with client.get(served.base + "/console/findings?format=csv&sort=address&order=asc") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert [row["address"] for row in rows] == ["203.0.113.5", "203.0.113.6", "203.0.113.7"]
    assert rows[1]["server_name"] == HOSTILE_NAME
    assert rows[1]["owner_name"] == "'=HYPERLINK(1)"
    assert rows[0]["grade"] == "—"
    assert rows[2]["status"] == "acknowledged"


async def test_json_export_takes_the_filters(served: Served, client: aiohttp.ClientSession) -> None:
    await sign_in(client, served.base)
    async with client.get(served.base + "/console/findings?format=json&status=acknowledged") as r:
        body = await r.json(content_type=None)
    assert body["count"] == 1
    [only] = body["findings"]
    assert (only["address"], only["exception"]["source"]) == ("203.0.113.7", "customer")
    assert only["grade"] is None


async def test_bad_parameters_are_named(served: Served, client: aiohttp.ClientSession) -> None:
    await sign_in(client, served.base)
    for query, named in (("status=closed", "status 'closed'"), ("sort=secret", "sort 'secret'"),
                         ("page=0", "page 0"), ("size=x", "size 'x'"),
                         ("format=xml", "format 'xml'")):  # fmt: skip
        async with client.get(served.base + "/console/findings?" + query) as r:
            assert r.status == 400, query
            assert named in await r.text()
    async with client.get(served.base + "/console/findings/not-a-finding") as r:
        assert r.status == 400
    async with client.get(served.base + "/console/findings/198.51.100.1_22_tcp") as r:
        assert r.status == 404


async def test_sign_out_ends_the_browser_session(
    served: Served, client: aiohttp.ClientSession
) -> None:
    await sign_in(client, served.base)
    async with client.get(served.base + "/console/ticks", headers=HTML) as r:
        match = re.search(r'name="csrf" value="([0-9a-f]+)"', await r.text())
    assert match is not None
    async with client.post(
        served.base + "/console/logout", data={"csrf": match.group(1)}, allow_redirects=False
    ) as r:
        assert r.status == 303
    async with client.get(served.base + "/console/", headers=HTML, allow_redirects=False) as r:
        assert r.status == 303


async def test_a_store_that_cannot_be_read_gives_503_without_details(
    served: Served, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*args: object, **kwargs: object) -> None:
        raise StateError("findings_page: OperationalError: database is locked")

    monkeypatch.setattr(served.console.browse, "findings_page", failing)
    await sign_in(client, served.base)
    async with client.get(served.base + "/console/findings") as r:
        assert r.status == 503
        body = await r.text()
    assert "cannot be read now" in body and "OperationalError" not in body
