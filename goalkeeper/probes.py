"""The HTTP face of the daemon: probes for Kubernetes, metrics for Prometheus, admin calls.

Probes are cheap and honest: they read the daemon's `Health`, never call OpenStack. The admin
endpoints are off unless `http.admin_token` is set, and compare the bearer token in constant
time. The server never installs signal handlers: the daemon owns signals.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from goalkeeper import logs
from goalkeeper.console import Console
from goalkeeper.health import Health

log = logs.get_logger(__name__)
REQUEST_HEADER_TIMEOUT_SECONDS = 5.0  # also how long an idle keep-alive connection stays open


class Controls(Protocol):
    """What the admin API may ask of the daemon."""

    def request_tick(self, reason: str) -> str | None: ...  # a run id, or None while one runs

    async def findings(self, *, include_resolved: bool) -> list[dict[str, Any]]: ...

    async def retry_failed(
        self, *, channel: str | None, ids: list[int] | None, who: str
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HttpServer:
    runner: web.AppRunner
    port: int

    async def aclose(self) -> None:
        await self.runner.cleanup()


def build_app(
    controls: Controls,
    *,
    health: Health,
    registry: CollectorRegistry,
    admin_token: Callable[[], str | None],
    console: Console | None = None,
) -> web.Application:
    """The probes, /metrics, the admin API and (when given) the staff console's pages."""
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        ok, details = health.liveness()
        return _json({"ok": ok, **details}, status=200 if ok else 503)

    async def readyz(request: web.Request) -> web.Response:
        ok, details = await health.readiness()
        return _json({"ok": ok, **details}, status=200 if ok else 503)

    async def scan(request: web.Request) -> web.Response:
        run_id = controls.request_tick("api")
        if run_id is None:
            return _json({"error": "a tick is already running"}, status=409)
        return _json({"run_id": run_id, "status": "started"}, status=202)

    async def findings(request: web.Request) -> web.Response:
        include_resolved = request.query.get("all", "").lower() in ("1", "true", "yes")
        rows = await controls.findings(include_resolved=include_resolved)
        return _json({"findings": rows, "count": len(rows)})

    async def retry(request: web.Request) -> web.Response:
        # ?channel=email|telegram and ?id=N (repeatable); nothing: every failed message.
        channel = request.query.get("channel")
        if channel not in (None, "email", "telegram"):
            return _json(
                {"error": f"channel must be email or telegram, not {channel!r}"}, status=400
            )
        try:
            ids = [int(v) for v in request.query.getall("id", [])] or None
        except ValueError:
            return _json({"error": "id must be a message number"}, status=400)
        who = f"api from {request.remote or 'unknown'}"
        return _json(await controls.retry_failed(channel=channel, ids=ids, who=who))

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    scan_route = _admin(scan, admin_token)
    if console is not None:  # the console's Scan now button posts here with its CSRF token
        scan_route = console.scan_guard(scan_route, controls.request_tick)
        console.mount(app)
    app.router.add_post("/scan", scan_route)
    app.router.add_get("/findings", _admin(findings, admin_token))
    app.router.add_post("/outbox/retry", _admin(retry, admin_token))
    return app


class BindError(Exception):
    """The HTTP port cannot be opened (in use, not an address of this host, not resolvable)."""


async def start_http(
    app: web.Application,
    *,
    host: str,
    port: int,
    request_timeout: float = REQUEST_HEADER_TIMEOUT_SECONDS,
) -> HttpServer:
    # aiohttp (>= 3.14.5) arms keepalive_timeout when a connection opens and again after each
    # response, and does not push it back as bytes arrive: a connection whose request headers are
    # not complete by then is closed. So it bounds the time to send headers, and a client that
    # trickles a byte a second cannot hold a connection open (its default is an hour).
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, keepalive_timeout=request_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        reason = err.strerror or str(err)
        raise BindError(
            f"cannot listen on {host} port {port} (http.host, http.port): {reason}"
        ) from None
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    log.info("http listening", host=host, port=bound)
    return HttpServer(runner=runner, port=bound)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _admin(handler: Handler, admin_token: Callable[[], str | None]) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        token = admin_token()
        if not token:
            return _json({"error": "admin API is off: no http.admin_token set"}, status=404)
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        # A header that is not UTF-8 arrives with surrogate escapes, which .encode() refuses.
        if not hmac.compare_digest(given.encode(errors="backslashreplace"), expected.encode()):
            log.warning("admin call refused", path=request.path, remote=request.remote)
            return _json(
                {"error": "unauthorized"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="goalkeeper"'},
            )
        return await handler(request)

    return guarded


def _json(
    body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=str),
        status=status,
        content_type="application/json",
        headers=headers,
    )
