"""SmtpMailer against a real aiosmtpd server on 127.0.0.1: delivery, retries, TLS, AUTH."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import traceback
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from structlog.testing import capture_logs

from goalkeeper.config import EmailSettings
from goalkeeper.model import DeliveryError, OutgoingMail
from goalkeeper.notify.email import SmtpMailer
from goalkeeper_sim.smtp import SmtpSink
from tests.recorded_sleep import RecordedSleep

PASSWORD = "s3cret-Pa55word"
MAIL = OutgoingMail(
    recipient="admin@acme.example",
    sender="Goalkeeper <security@example.com>",
    subject="[prod] 1 dangerous open port on 1 of your servers",
    text="Hello ACME,\nRedis is open on 203.0.113.5.\n",
    html="<p>Hello ACME,</p><p>Redis is open on <code>203.0.113.5</code>.</p>",
    message_id="<0123456789abcdef0123456789abcdef@example.com>",
    headers={"Auto-Submitted": "auto-generated"},
)


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    async with SmtpSink() as running:
        yield running


def mailer(
    port: int,
    sleep: RecordedSleep,
    *,
    tls_context: ssl.SSLContext | None = None,
    **settings: object,
) -> SmtpMailer:
    options: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "timeout": 5,
    }
    options.update(settings)
    return SmtpMailer(
        EmailSettings.model_validate(options),
        sleep=sleep,
        local_hostname="goalkeeper.test",
        tls_context=tls_context,
    )


async def test_delivers_both_parts_with_the_right_envelope_and_headers(
    sink: SmtpSink, sleep: RecordedSleep
) -> None:
    await mailer(sink.port, sleep).send(MAIL)
    (received,) = sink.messages
    assert received.mail_from == "security@example.com"
    assert received.rcpt_tos == ("admin@acme.example",)
    message = received.message
    assert message["From"] == MAIL.sender
    assert message["To"] == MAIL.recipient
    assert message["Subject"] == MAIL.subject
    assert message["Message-ID"] == MAIL.message_id
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert isinstance(text, EmailMessage)
    assert isinstance(html, EmailMessage)
    assert text.get_content().replace("\r\n", "\n") == MAIL.text
    assert html.get_content().strip() == MAIL.html
    assert sleep.delays == []


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
async def test_temporary_refusal_is_retried_and_delivered_once(
    sink: SmtpSink, sleep: RecordedSleep, stage: str
) -> None:
    sink.fail_next(451, 1, stage=stage)  # type: ignore[arg-type]
    await mailer(sink.port, sleep).send(MAIL)
    assert len(sink.messages) == 1
    assert len(sleep.delays) == 1
    assert 0.5 <= sleep.delays[0] <= 1.0  # first backoff: base 1 s, jittered down to half
    assert sink.commands(stage) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("stage", ["RCPT", "DATA"])
async def test_permanent_refusal_fails_at_once(
    sink: SmtpSink, sleep: RecordedSleep, stage: str
) -> None:
    sink.fail_next(550, 1, stage=stage)  # type: ignore[arg-type]
    with pytest.raises(DeliveryError) as caught:
        await mailer(sink.port, sleep).send(MAIL)
    assert caught.value.permanent
    assert "550" in caught.value.reason
    assert sleep.delays == []
    assert sink.commands(stage) == 1  # type: ignore[arg-type]
    assert sink.messages == []


async def test_exhausted_temporary_failures_are_reported_as_temporary(
    sink: SmtpSink, sleep: RecordedSleep
) -> None:
    sink.fail_next(451, 5)
    with pytest.raises(DeliveryError) as caught:
        await mailer(sink.port, sleep).send(MAIL)
    assert not caught.value.permanent
    assert "gave up after 3 attempts" in caught.value.reason
    assert len(sleep.delays) == 2
    assert sink.commands("RCPT") == 3
    assert sink.messages == []


async def test_server_down_is_a_temporary_failure_after_retries(sleep: RecordedSleep) -> None:
    # A bound socket that never listens: connections are refused, and nobody else gets the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(DeliveryError) as caught:
            await mailer(port, sleep).send(MAIL)
    assert not caught.value.permanent
    assert "gave up after 3 attempts" in caught.value.reason
    assert len(sleep.delays) == 2
    assert sleep.delays[1] > 0.99 * sleep.delays[0] / 2  # grows: 0.5-1 s, then 1-2 s


async def test_the_waits_start_from_the_configured_retry_backoff_and_stop_at_the_cap(
    sleep: RecordedSleep,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        settings = EmailSettings(
            host="127.0.0.1", port=closed.getsockname()[1], starttls=False, retry_backoff=20
        )
        with pytest.raises(DeliveryError):
            await SmtpMailer(settings, attempts=3, sleep=sleep).send(MAIL)
    assert 10 <= sleep.delays[0] <= 20  # notify.email.retry_backoff: 20 s, jittered down to half
    assert 15 <= sleep.delays[1] <= 30  # 40 s, but never past the 30 s cap


class SilentConnection(asyncio.Protocol):
    """One accepted TCP connection on which the SMTP greeting never comes."""

    def __init__(self, connections: list[SilentConnection]) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        connections.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(None)


async def test_a_silent_server_is_cut_off_by_the_deadline(sleep: RecordedSleep) -> None:
    connections: list[SilentConnection] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: SilentConnection(connections), "127.0.0.1", 0
    )
    async with server:
        port = server.sockets[0].getsockname()[1]
        settings = EmailSettings(host="127.0.0.1", port=port, starttls=False, timeout=30)
        silent = SmtpMailer(settings, attempts=2, deadline=0.2, sleep=sleep)
        with pytest.raises(DeliveryError) as caught:
            await silent.send(MAIL)
        # The mailer hung up on both connections itself; nothing was left open.
        await asyncio.gather(*(c.lost for c in connections))
    assert not caught.value.permanent
    assert "deadline" in caught.value.reason
    assert len(connections) == 2


async def test_login_with_the_right_password_delivers(sleep: RecordedSleep) -> None:
    async with SmtpSink(credentials=("goalkeeper", PASSWORD)) as sink:
        await mailer(sink.port, sleep, username="goalkeeper", password=PASSWORD).send(MAIL)
        assert len(sink.messages) == 1


async def test_wrong_password_is_permanent_and_never_shown(sleep: RecordedSleep) -> None:
    wrong = "not-the-" + PASSWORD
    async with SmtpSink(credentials=("goalkeeper", PASSWORD)) as sink:
        client = mailer(sink.port, sleep, username="goalkeeper", password=wrong)
        with capture_logs() as logs, pytest.raises(DeliveryError) as caught:
            await client.send(MAIL)
        assert sink.messages == []
    assert caught.value.permanent
    assert "535" in caught.value.reason
    shown = "".join(traceback.format_exception(caught.value)) + repr(client) + repr(logs)
    assert wrong not in shown
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


async def test_server_that_demands_login_refuses_anonymous_mail(sleep: RecordedSleep) -> None:
    async with SmtpSink(credentials=("goalkeeper", PASSWORD)) as sink:
        with pytest.raises(DeliveryError) as caught:
            await mailer(sink.port, sleep).send(MAIL)
    assert caught.value.permanent
    assert "530" in caught.value.reason


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, so TLS is verified for real, hostname included."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "goalkeeper test SMTP")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    return context


@pytest.fixture
def client_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files[0]))


async def test_starttls_upgrades_and_logs_in(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, sleep: RecordedSleep
) -> None:
    async with SmtpSink(starttls=server_tls, credentials=("goalkeeper", PASSWORD)) as sink:
        client = mailer(
            sink.port,
            sleep,
            starttls=True,
            username="goalkeeper",
            password=SecretStr(PASSWORD),
            tls_context=client_tls,
        )
        await client.send(MAIL)
        assert len(sink.messages) == 1


async def test_plain_client_is_refused_by_a_starttls_only_server(
    server_tls: ssl.SSLContext, sleep: RecordedSleep
) -> None:
    async with SmtpSink(starttls=server_tls) as sink:
        with pytest.raises(DeliveryError) as caught:
            await mailer(sink.port, sleep, starttls=False).send(MAIL)
        assert sink.messages == []
    assert caught.value.permanent
    assert "530" in caught.value.reason


async def test_untrusted_certificate_is_not_accepted(
    server_tls: ssl.SSLContext, sleep: RecordedSleep
) -> None:
    async with SmtpSink(starttls=server_tls) as sink:
        client = SmtpMailer(
            EmailSettings(host="127.0.0.1", port=sink.port, starttls=True),
            attempts=1,
            sleep=sleep,
        )
        with pytest.raises(DeliveryError) as caught:
            await client.send(MAIL)
        assert sink.messages == []
    assert "certificate verify failed" in caught.value.reason
    assert not caught.value.permanent  # the mail is fine; the server or the settings are not


async def test_implicit_tls_delivers(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext, sleep: RecordedSleep
) -> None:
    async with SmtpSink(implicit_tls=server_tls) as sink:
        client = mailer(sink.port, sleep, starttls=False, ssl=True, tls_context=client_tls)
        await client.send(MAIL)
        assert len(sink.messages) == 1


def server_threads() -> set[threading.Thread]:
    # The loop's default executor (asyncio.to_thread) keeps its workers until the loop closes.
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


async def test_sink_writes_eml_files_and_leaves_no_thread(tmp_path: Path) -> None:
    before = server_threads()
    async with SmtpSink(directory=tmp_path / "mail") as sink:
        assert len(server_threads() - before) == 1  # the controller's server thread
        await mailer(sink.port, RecordedSleep()).send(MAIL)
        (received,) = sink.messages
    assert server_threads() == before
    assert received.path == tmp_path / "mail" / "0001.eml"
    assert received.path.read_bytes() == received.raw
    assert b"Message-ID: " + MAIL.message_id.encode() in received.raw


def test_sink_refuses_to_listen_off_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SmtpSink(host="0.0.0.0")
