"""An SMTP sink on loopback for the demo and the tests: a real aiosmtpd server that keeps mail.

It speaks real SMTP (EHLO, optional STARTTLS or implicit TLS, optional AUTH) so the real
SmtpMailer is tested against it, keeps every envelope and parsed message, can write each one to
a directory as an .eml file, and can be told to refuse the next RCPT or DATA commands with a
chosen reply. It only ever listens on loopback and must never relay anything anywhere.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["RCPT", "DATA"]
_REPLIES = {
    421: "421 4.3.2 Service shutting down (simulated)",
    450: "450 4.2.1 Mailbox busy (simulated)",
    451: "451 4.3.0 Temporary local problem (simulated)",
    452: "452 4.3.1 Insufficient system storage (simulated)",
    550: "550 5.1.1 Mailbox unavailable (simulated)",
    552: "552 5.3.4 Message too big (simulated)",
    554: "554 5.7.1 Transaction failed (simulated)",
}


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    path: Path | None


class _Handler:
    """aiosmtpd hooks; they run on the controller's thread, so shared state takes the lock."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.sink._credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        refusal = self.sink._take_failure("RCPT")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self.sink._take_failure("DATA")
        if refusal:
            return refusal
        raw = envelope.original_content or cast(bytes, envelope.content)
        self.sink._keep(envelope.mail_from or "", tuple(envelope.rcpt_tos), raw)
        return "250 2.0.0 OK: queued"


class _LoopbackController(Controller):
    """Listens on a socket bound before start, so the port is free of races and known at once."""

    def __init__(self, handler: _Handler, listener: socket.socket, **kwargs: Any) -> None:
        host, port = listener.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port, **kwargs)
        self._listener = listener

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return cast(
            Awaitable[asyncio.AbstractServer],
            self.loop.create_server(
                self._factory_invoker, sock=self._listener, ssl=self.ssl_context
            ),
        )


class SmtpSink:
    """Context manager (plain or async) running the sink; `.host`, `.port`, `.messages`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        directory: Path | None = None,
        credentials: tuple[str, str] | None = None,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        if not host.startswith("127."):
            raise ValueError("the SMTP sink listens on loopback only")
        self.host = host
        self.port = 0
        self.directory = directory
        self._credentials = credentials
        self._starttls = starttls
        self._implicit_tls = implicit_tls
        self._lock = threading.Lock()
        self._messages: list[ReceivedMail] = []
        self._failures: list[tuple[Stage, str]] = []
        self._commands = {"RCPT": 0, "DATA": 0}
        self._controller: _LoopbackController | None = None

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    def commands(self, stage: Stage) -> int:
        """How many RCPT or DATA commands reached the handler, refused ones included."""
        with self._lock:
            return self._commands[stage]

    def fail_next(self, code: int, count: int = 1, *, stage: Stage = "RCPT") -> None:
        """Answer the next `count` commands of `stage` with `code` (e.g. 451 or 550)."""
        reply = _REPLIES.get(code, f"{code} Simulated failure")
        with self._lock:
            self._failures.extend([(stage, reply)] * count)

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        self.port = listener.getsockname()[1]
        options: dict[str, Any] = {
            "server_hostname": "sink.goalkeeper.test",
            "ident": "Goalkeeper SMTP sink",
            "ssl_context": self._implicit_tls,
        }
        if self._starttls is not None:
            options.update(tls_context=self._starttls, require_starttls=True)
        if self._credentials is not None:
            # aiosmtpd warns on every connection when AUTH is required without TLS, so the
            # requirement is enforced in handle_MAIL instead; tests log in over plain SMTP too.
            options.update(
                authenticator=self._authenticate,
                auth_require_tls=self._starttls is not None,
            )
        controller = _LoopbackController(_Handler(self), listener, **options)
        try:
            controller.start()
        except BaseException:
            controller.stop(no_assert=True)
            listener.close()
            raise
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> SmtpSink:
        # start() blocks until the server thread answers; keep the caller's loop free meanwhile.
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _take_failure(self, stage: Stage) -> str | None:
        with self._lock:
            self._commands[stage] += 1
            for index, (wanted, reply) in enumerate(self._failures):
                if wanted == stage:
                    del self._failures[index]
                    return reply
        return None

    def _keep(self, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes) -> None:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self._lock:
            path = None
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f"{len(self._messages) + 1:04d}.eml"
                path.write_bytes(raw)
            self._messages.append(ReceivedMail(mail_from, rcpt_tos, message, raw, path))

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self._credentials is None:
            return AuthResult(success=False, handled=False)
        username, password = self._credentials
        accepted = data.login == username.encode() and data.password == password.encode()
        return AuthResult(success=accepted, handled=False)
