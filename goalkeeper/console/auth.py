"""Who may see the staff console: a signed session cookie from the login form, or the bearer.

The cookie holds a random session id signed with itsdangerous (Pallets) under a key derived
from `http.admin_token`: changing the token ends every session, and nothing but the token is
needed to check one, so sessions survive a restart and need no table. The CSRF token of a form
is an HMAC of the session id under that key (bound to the session, never stored). The admin
token itself is never rendered, logged or put in the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from aiohttp import web
from itsdangerous import BadSignature, TimestampSigner

COOKIE = "goalkeeper_console"
SESSION_SECONDS = 8 * 3600  # a working day: then the login form again
_SALT = "goalkeeper-console-session"
_KEY_LABEL = b"goalkeeper staff console session key"


def token_matches(given: str, token: str) -> bool:
    """Constant time; a value that is not UTF-8 arrives with surrogate escapes."""
    return hmac.compare_digest(given.encode(errors="backslashreplace"), token.encode())


def bearer_matches(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    return token_matches(given, f"Bearer {token}")


class Sessions:
    """Signs and checks console sessions; reads the token at each call (a reload may set it)."""

    def __init__(
        self, token: Callable[[], str | None], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._token = token
        self._clock = clock

    def _key(self, token: str) -> bytes:
        return hmac.new(token.encode(), _KEY_LABEL, hashlib.sha256).digest()

    def _signer(self, token: str) -> TimestampSigner:
        clock = self._clock

        class Signer(TimestampSigner):
            def get_timestamp(self) -> int:  # the injected clock: expiry is tested without sleeps
                return int(clock())

        return Signer(self._key(token), salt=_SALT)

    def new_cookie(self) -> str:
        token = self._token()
        if not token:
            raise ValueError("the console is off: no http.admin_token set")
        return self._signer(token).sign(secrets.token_urlsafe(18)).decode()

    def session_of(self, request: web.Request) -> str | None:
        """The session id of a valid, unexpired cookie on `request`, else None."""
        token = self._token()
        value = request.cookies.get(COOKIE)
        if not token or not value:
            return None
        try:
            return self._signer(token).unsign(value, max_age=SESSION_SECONDS).decode()
        except (BadSignature, UnicodeError):  # SignatureExpired is a BadSignature
            return None

    def csrf_for(self, session: str) -> str:
        token = self._token() or ""
        return hmac.new(self._key(token), b"csrf:" + session.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: str, given: str) -> bool:
        return hmac.compare_digest(
            given.encode(errors="backslashreplace"), self.csrf_for(session).encode()
        )

    def set_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        response.set_cookie(
            COOKIE,
            self.new_cookie(),
            max_age=SESSION_SECONDS,
            path="/",  # POST /scan (the scan-now button) is outside /console
            httponly=True,
            samesite="Strict",
            secure=served_over_https(request),
        )


def served_over_https(request: web.Request) -> bool:
    """TLS here, or at the ingress in front of the pod (which says so in X-Forwarded-Proto)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")
