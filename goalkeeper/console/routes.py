"""The staff console's HTTP routes on the daemon's aiohttp app (DESIGN §10, paths kept exactly).

Off (404) unless `http.admin_token` is set. Every page needs a session cookie from the login
form or the bearer token; without either a browser is sent to /console/login and anything else
gets 401. Every answer carries a Content-Security-Policy without inline script, and is never
cached. The one write, "scan now", is the existing POST /scan: from a console form it needs the
session's CSRF token (`scan_guard`). Pages only read the store (`Browse`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from goalkeeper import logs
from goalkeeper.console.auth import COOKIE, Sessions, bearer_matches, token_matches, wants_html
from goalkeeper.console.pages import (
    BadParameter,
    finding_page,
    finding_row,
    findings_page,
    outbox_page,
    overview_page,
    owners_page,
    parse_finding_id,
    parse_finding_query,
    ticks_page,
)
from goalkeeper.console.render import STATIC, render_page
from goalkeeper.state import Browse, StateError
from goalkeeper.views import record_as_dict

log = logs.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
# The findings export's columns, in order: the table's, plus what a spreadsheet filters on.
CSV_COLUMNS = (
    "address", "port", "protocol", "service", "grade", "status", "server_name", "server_id",
    "project_name", "project_id", "owner_name", "owner_email", "exception", "first_seen",
    "last_seen", "resolved_at", "times_notified",
)  # fmt: skip
CSRF_KEY = web.RequestKey("console_csrf", str)  # the page's CSRF token (empty: bearer, no form)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell


@dataclass
class Console:
    browse: Browse
    admin_token: Callable[[], str | None]
    clock: Callable[[], datetime]
    resend_seconds: float  # how often the daemon tries pending messages again
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.admin_token)

    def mount(self, app: web.Application) -> None:
        add = app.router
        add.add_get("/console/login", self._open(self.login_form))
        add.add_post("/console/login", self._open(self.login))
        add.add_post("/console/logout", self._open(self.logout))
        add.add_get("/console/static/console.css", self._open(self.stylesheet))
        add.add_get("/console", self._open(self.to_overview))
        add.add_get("/console/", self._page(self.overview))
        add.add_get("/console/findings", self._page(self.findings))
        add.add_get("/console/findings/{id}", self._page(self.finding))
        add.add_get("/console/owners", self._page(self.owners))
        add.add_get("/console/outbox", self._page(self.outbox))
        add.add_get("/console/ticks", self._page(self.ticks))

    # -- access ---------------------------------------------------------------------------

    def _open(self, handler: Handler) -> Handler:
        """Off without a token; the security headers on every answer."""

        async def answer(request: web.Request) -> web.StreamResponse:
            if not self.admin_token():
                return _secured(web.Response(status=404, text="not found"))
            return _secured(await handler(request))

        return answer

    def _page(self, handler: Handler) -> Handler:
        """`_open`, and only for a valid session cookie or the bearer token."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            token = self.admin_token()
            session = self.sessions.session_of(request)
            if session is None and not (token and bearer_matches(request, token)):
                if request.headers.get("Authorization") or request.cookies.get(COOKIE):
                    log.warning("console request refused", path=request.path, remote=request.remote)
                if wants_html(request):
                    return _redirect("/console/login")
                return web.Response(
                    status=401,
                    text="unauthorized: sign in at /console/login or send the bearer token",
                    headers={"WWW-Authenticate": 'Bearer realm="goalkeeper"'},
                )
            request[CSRF_KEY] = self.sessions.csrf_for(session) if session else ""
            try:
                return await handler(request)
            except BadParameter as err:
                return _text(f"bad request: {err}", status=400)
            except StateError as err:
                log.error("console page failed", path=request.path, error=str(err))
                return _text("the state store cannot be read now; see the daemon's log", 503)

        return self._open(guarded)

    def scan_guard(
        self, bearer_scan: Handler, request_tick: Callable[[str], str | None]
    ) -> Handler:
        """POST /scan: the bearer (the API, as before), or the console's form with its CSRF."""

        async def scan(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") or not request.cookies.get(COOKIE):
                return await bearer_scan(request)
            if not self.admin_token():
                return await bearer_scan(request)  # off: its 404
            session = self.sessions.session_of(request)
            form = await request.post()
            given = form.get("csrf")
            if (
                session is None
                or not isinstance(given, str)
                or not self.sessions.csrf_ok(session, given)
            ):
                log.warning(
                    "console scan refused: no valid session or CSRF token", remote=request.remote
                )
                return _secured(_text("forbidden: sign in again and use the Scan now button", 403))
            run_id = request_tick("console")
            where = f"/console/ticks?started={run_id}" if run_id else "/console/ticks?busy=1"
            return _secured(_redirect(where))

        return scan

    # -- sign in and out ------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        return _html(render_page("login.html.j2", page="login", signed_in=False, problem=""))

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given, token = form.get("token"), self.admin_token() or ""
        if not isinstance(given, str) or not token_matches(given, token):
            log.warning("console sign-in refused", remote=request.remote)
            page = render_page(
                "login.html.j2", page="login", signed_in=False, problem="That token is not right."
            )
            return _html(page, status=401)
        response = _redirect("/console/")
        self.sessions.set_cookie(request, response)
        log.info("console sign-in", remote=request.remote)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        session = self.sessions.session_of(request)
        form = await request.post()
        given = form.get("csrf")
        if session is not None and isinstance(given, str) and self.sessions.csrf_ok(session, given):
            response = _redirect("/console/login")
            response.del_cookie(COOKIE, path="/")
            return response
        return _text("forbidden: no valid session or CSRF token", 403)

    async def stylesheet(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=(STATIC / "console.css").read_bytes(), content_type="text/css", charset="utf-8"
        )

    async def to_overview(self, request: web.Request) -> web.StreamResponse:
        return _redirect("/console/", status=308)

    # -- pages ----------------------------------------------------------------------------

    def _render(
        self, request: web.Request, name: str, page: str, data: dict[str, Any]
    ) -> web.Response:
        body = render_page(name, page=page, signed_in=True, csrf=request[CSRF_KEY], **data)
        return _html(body)

    async def overview(self, request: web.Request) -> web.StreamResponse:
        data = await overview_page(self.browse, now=self.clock())
        return self._render(request, "overview.html.j2", "overview", data)

    async def findings(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        export = params.get("format", "")
        if export in ("csv", "json"):
            return await self._export(request, export)
        if export:
            raise BadParameter(f"format {export!r}: csv or json (or none, for the page)")
        data = await findings_page(self.browse, params)
        return self._render(request, "findings.html.j2", "findings", data)

    async def finding(self, request: web.Request) -> web.StreamResponse:
        key = parse_finding_id(request.match_info["id"])
        data = await finding_page(self.browse, key)
        if data is None:
            return _text(f"no finding {key[0]} {key[1]}/{key[2]} in the state store", 404)
        return self._render(request, "finding.html.j2", "findings", data)

    async def owners(self, request: web.Request) -> web.StreamResponse:
        data = await owners_page(self.browse, dict(request.query))
        return self._render(request, "owners.html.j2", "owners", data)

    async def outbox(self, request: web.Request) -> web.StreamResponse:
        data = await outbox_page(self.browse, resend_seconds=self.resend_seconds)
        return self._render(request, "outbox.html.j2", "outbox", data)

    async def ticks(self, request: web.Request) -> web.StreamResponse:
        data = await ticks_page(self.browse, dict(request.query))
        return self._render(request, "ticks.html.j2", "ticks", data)

    async def _export(self, request: web.Request, fmt: str) -> web.StreamResponse:
        """Every finding the filters match (no paging), streamed a partition at a time."""
        query = parse_finding_query(dict(request.query))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/json",
                "Content-Disposition": f'attachment; filename="goalkeeper-findings.{fmt}"',
                **SECURITY_HEADERS,
            }
        )
        await response.prepare(request)
        buffer = io.StringIO()
        if fmt == "csv":
            writer = csv.writer(buffer)
            writer.writerow(CSV_COLUMNS)
        else:
            buffer.write('{"findings": [')
        count = 0
        async for record in self.browse.findings_all(query):
            if fmt == "csv":
                row = finding_row(record)
                writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
            else:
                item = {**record_as_dict(record), "grade": record.grade}
                buffer.write((", " if count else "") + json.dumps(item, default=str))
            count += 1
            if buffer.tell() > 64_000:
                await response.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
        if fmt == "json":
            buffer.write(f'], "count": {count}}}')
        await response.write(buffer.getvalue().encode())
        await response.write_eof()
        return response


def _cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: customer names starting `=` run as formulas."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _redirect(location: str, *, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _html(body: str, *, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _text(body: str, status: int) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain", charset="utf-8")
