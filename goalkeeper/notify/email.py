"""Delivers rendered mails over SMTP with aiosmtplib: plain, STARTTLS or implicit TLS.

The only module that imports aiosmtplib. It decides what a failure means: 5xx replies are
permanent and never retried; connection errors, timeouts and 4xx replies are retried (the
senders' one policy, notify/retry.py). With a `KeptConnection`, one connection carries many
mails (connect, TLS and login are most of a small mail's cost) until the owner calls aclose().
It must not render or change a mail, and the password never reaches a log line or an
exception: errors carry the server's reply with the password masked, and no exception chain.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr

import aiosmtplib
import structlog
from structlog.typing import FilteringBoundLogger as BoundLogger

from goalkeeper.aio import Sleep
from goalkeeper.config import EmailSettings
from goalkeeper.model import DeliveryError, OutgoingMail
from goalkeeper.notify.render import to_mime
from goalkeeper.notify.retry import Backoff, Retryable, failed_reason

log = structlog.get_logger(__name__)
MAX_BACKOFF = 30.0  # the longest wait between two attempts at one mail


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    permanent: bool
    code: int | None = None


@dataclass(frozen=True, slots=True)
class KeptConnection:
    """One SMTP session kept open between sends, for at most `max_mails` mails (servers cap
    mails per session) and `idle_timeout` seconds of silence (servers drop idle sessions)."""

    max_mails: int = 100
    idle_timeout: float = 30.0


class SmtpMailer:
    """model.Mailer over SMTP: a connection per mail, or one kept open for many (`kept`).

    Whoever creates a mailer with a kept connection must aclose() it. A failed send is tried
    `attempts` times in all, the waits doubling from the settings' `retry_backoff`.
    """

    def __init__(
        self,
        settings: EmailSettings,
        *,
        kept: KeptConnection | None = None,
        attempts: int = 3,
        deadline: float | None = None,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._password = settings.password.get_secret_value() if settings.password else None
        self._policy = Backoff(
            attempts=max(1, attempts), base=settings.retry_backoff, cap=MAX_BACKOFF
        )
        # One attempt is several round trips, each allowed `timeout`; the deadline stops a
        # server that answers just often enough to never trip the per-read timeout.
        self._deadline = deadline if deadline is not None else settings.timeout * 3
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._sleep = sleep
        self._reuse = kept is not None
        self._max_per_connection = max(1, kept.max_mails) if kept else 1
        self._idle_timeout = kept.idle_timeout if kept else 0.0
        self._kept: aiosmtplib.SMTP | None = None
        self._kept_sent = 0
        self._kept_since = 0.0  # monotonic time of its last mail
        self._lock = asyncio.Lock()  # one SMTP conversation at a time on the kept connection

    def __repr__(self) -> str:
        s = self._settings
        return f"SmtpMailer(host={s.host!r}, port={s.port}, username={s.username!r})"

    async def aclose(self) -> None:
        """Say QUIT on the kept connection, if any. Sends after this open a new one."""
        async with self._lock:
            await self._drop_kept(polite=True)

    async def send(self, mail: OutgoingMail) -> None:
        """Deliver `mail` to its one recipient or raise DeliveryError saying whether to retry."""
        try:
            message = to_mime(mail)
        except ValueError as err:
            raise DeliveryError(f"the mail cannot be sent: {err}", permanent=True) from None
        async with self._lock:
            await self._send(mail, message)

    async def _send(self, mail: OutgoingMail, message: EmailMessage) -> None:
        bound = log.bind(recipient=mail.recipient, message_id=mail.message_id)

        reason = await failed_reason(
            lambda number: self._attempt(mail, message, bound, number),
            policy=self._policy,
            sleep=self._sleep,
            on_retry=lambda n, delay, error: bound.warning(
                "mail.retry", attempt=n, delay=round(delay, 2), reason=error.reason
            ),
        )
        if reason is None:
            return
        # Raised outside the handler, so no exception chain carries the server's words along.
        bound.warning("mail.failed", attempts=self._policy.attempts, reason=reason)
        raise DeliveryError(
            f"{reason} (gave up after {self._policy.attempts} attempts)", permanent=False
        )

    async def _attempt(
        self, mail: OutgoingMail, message: EmailMessage, bound: BoundLogger, number: int
    ) -> None:
        """One attempt; raise DeliveryError (permanent) or Retryable when it fails."""
        while True:
            client = await self._connection()
            reused = client is self._kept  # a session that already carried a mail
            try:
                async with asyncio.timeout(self._deadline):
                    if not client.is_connected:
                        await client.connect()
                        if self._settings.username:
                            await client.login(self._settings.username, self._password or "")
                    await client.send_message(
                        message, sender=parseaddr(mail.sender)[1], recipients=[mail.recipient]
                    )
            except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError) as err:
                failure = self._classify(err)
                # After any failure the session's state is unknown: never reuse it.
                self._kept = None
                await self._close(client, polite=not isinstance(err, TimeoutError | OSError))
                gone = reused and _session_gone(err)
            else:
                await self._keep_or_close(client)
                bound.info("mail.sent", attempt=number, reused_connection=reused)
                return
            if not gone:
                break
            # The kept session may have been closed by the server while idle: one fresh
            # connection at once, not counted as an attempt.
            bound.debug("mail.reconnect", reason=failure.reason)
        if failure.permanent:
            bound.warning("mail.refused", reason=failure.reason)
            raise DeliveryError(failure.reason, permanent=True, code=failure.code)
        raise Retryable(failure.reason)

    async def _connection(self) -> aiosmtplib.SMTP:
        """The kept connection while it is fresh, or a new unconnected client."""
        kept = self._kept
        if kept is not None and (
            not kept.is_connected
            or self._kept_sent >= self._max_per_connection
            or time.monotonic() - self._kept_since > self._idle_timeout
        ):
            await self._drop_kept(polite=True)
        if self._kept is not None:
            return self._kept
        return self._open()

    async def _keep_or_close(self, client: aiosmtplib.SMTP) -> None:
        if not self._reuse:
            await self._close(client, polite=True)
            return
        if self._kept is not client:
            self._kept, self._kept_sent = client, 0
        self._kept_sent += 1
        self._kept_since = time.monotonic()

    async def _drop_kept(self, *, polite: bool) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            await self._close(kept, polite=polite)

    def _open(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.ssl,
            # False, not None: None would mean "upgrade if offered", hiding a downgrade.
            start_tls=s.starttls,
            timeout=s.timeout,
            tls_context=self._tls_context,
            local_hostname=self._local_hostname,
        )

    async def _close(self, client: aiosmtplib.SMTP, *, polite: bool) -> None:
        """Say QUIT when the server is talking; a mail it accepted stays accepted regardless."""
        try:
            if polite and client.is_connected:
                async with asyncio.timeout(self._settings.timeout):
                    await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass  # the transport is closed below either way
        finally:
            # aiosmtplib leaves the transport open when a connect is cancelled mid-way.
            client.close()

    def _classify(self, err: BaseException) -> _Failure:
        if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
            codes = [refused.code for refused in err.recipients]
            replies = "; ".join(f"{r.code} {r.message}" for r in err.recipients)
            return _Failure(
                self._clean(f"recipient refused: {replies}"),
                permanent=bool(codes) and all(500 <= code < 600 for code in codes),
                code=codes[0] if len(set(codes)) == 1 else None,
            )
        if isinstance(err, aiosmtplib.SMTPResponseException):
            what = type(err).__name__.removeprefix("SMTP")
            return _Failure(
                self._clean(f"{what}: {err.code} {err.message}"),
                permanent=500 <= err.code < 600,
                code=err.code,
            )
        if isinstance(err, ssl.SSLError):
            # Certificate or handshake trouble lies with the server or the settings, not with
            # this mail: it may well go through once that is fixed.
            return _Failure(self._clean(f"TLS failed: {err}"), permanent=False)
        if isinstance(err, aiosmtplib.SMTPNotSupported | ValueError):
            # The server lacks what the settings demand (STARTTLS, AUTH), or the mail has an
            # address SMTP cannot carry: the same attempt would fail the same way again.
            return _Failure(self._clean(f"{type(err).__name__}: {err}"), permanent=True)
        if isinstance(err, TimeoutError) and not isinstance(err, aiosmtplib.SMTPException):
            return _Failure(f"no answer within the {self._deadline:g} s deadline", False)
        return _Failure(self._clean(f"{type(err).__name__}: {err}"), permanent=False)

    def _clean(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text


def _session_gone(err: BaseException) -> bool:
    """The server ended the session (idle timeout, restart, 421): the mail was never refused."""
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
        return bool(err.recipients) and all(r.code == 421 for r in err.recipients)
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return err.code == 421
    return isinstance(err, aiosmtplib.SMTPServerDisconnected | ConnectionError)
