"""The operator's retry of failed messages: `goalkeeper retry-failed` and `POST /outbox/retry`.

Both move failed messages back to pending with their attempts reset and log who did it; a mail
rerouted because its address changed owner is never moved (its replacement went to the new
owner). The CLI runs as a subprocess on a real SQLite store; the endpoint on the real daemon,
which sends what it moved at once, to a real SMTP server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from goalkeeper.model import OutgoingMail
from goalkeeper.resend import OWNER_CHANGED
from goalkeeper.state import NewMessage, OutboxMessage, StateStore
from goalkeeper_sim.smtp import SmtpSink
from tests.daemon_process import DaemonProcess

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
OPS = "ops@provider.example"


def mail(number: int, recipient: str) -> NewMessage:
    rendered = OutgoingMail(
        recipient=recipient,
        sender=f"Goalkeeper <{OPS}>",
        subject=f"report {number}",
        text="t",
        html="<p>t</p>",
        message_id=f"<m{number}@provider.example>",
    )
    return NewMessage.email(rendered, recipient_key=recipient)


async def failed_messages(url: str) -> dict[str, OutboxMessage]:
    """A mail refused by a relay outage, a Telegram summary, and a rerouted mail: all failed."""
    store = await StateStore.open(url)
    try:
        stored = await store.commit_tick(
            run_id="r1", started_at=T0, upserts=[],
            messages=[
                mail(1, "alice@customer.example"),
                NewMessage.telegram("summary", chat_id="-100", message_id="r1.summary"),
                mail(2, "old-owner@customer.example"),
            ],
        )  # fmt: skip
        refused, summary, rerouted = stored
        await store.mark_failed(refused.id, reason="550 5.1.1 Mailbox unavailable", now=T0)
        await store.mark_failed(summary.id, reason="HTTP 400: chat not found", now=T0)
        await store.mark_failed(rerouted.id, reason=f"{OWNER_CHANGED}; sent to b instead", now=T0)
        return {"refused": refused, "summary": summary, "rerouted": rerouted}
    finally:
        await store.aclose()


async def statuses(url: str) -> dict[int, tuple[str, int]]:
    store = await StateStore.open(url)
    try:
        pending = {m.id: (m.status, m.attempts) for m in await store.pending()}
        failed = {m.id: (m.status, m.attempts) for m in await store.failed()}
        return {**pending, **failed}
    finally:
        await store.aclose()


async def goalkeeper(config: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "goalkeeper", "--config", str(config), *args,
        env=dict(os.environ), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_config(tmp_path: Path, url: str, **notify: object) -> Path:
    (tmp_path / "inventory.yaml").write_text("targets: []\n")
    data = {
        "inventory": {"source": "static", "static_file": "inventory.yaml"},
        "scan": {
            "allowed_networks": ["127.42.0.0/16"],
            "allow_loopback": True,
            "privileged": False,
        },
        "notify": {"ops_email": OPS, "sender": f"Goalkeeper <{OPS}>", **notify},
        "schedule": {"cron": "0 6 1 1 *"},
        "state": {"url": url},
        "logging": {"format": "json"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_the_cli_moves_failed_messages_back_to_pending(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    stored = await failed_messages(url)
    config = write_config(tmp_path, url)
    refused, summary, rerouted = (stored[k].id for k in ("refused", "summary", "rerouted"))

    code, out, err = await goalkeeper(config, "retry-failed", "--channel", "email")
    assert code == 0, err
    assert f"moved back to pending: 1 message(s) ({refused})" in out
    assert f"not moved: {rerouted}: rerouted to the current owner" in out
    assert (await statuses(url)) == {
        refused: ("pending", 0),
        summary: ("failed", 1),
        rerouted: ("failed", 1),
    }
    assert '"who": "cli by ' in err and '"event": "failed messages moved back to pending"' in err

    code, out, _ = await goalkeeper(config, "retry-failed", "--id", str(summary), "--id", "999")
    assert code == 0
    assert f"({summary})" in out and "not moved: 999: no failed message with this id" in out
    assert (await statuses(url))[summary] == ("pending", 0)


async def test_the_command_is_in_the_help_and_the_readme() -> None:
    code, out, _ = await goalkeeper(Path("unused.yaml"), "--help")
    assert code == 0 and "retry-failed" in out
    code, out, _ = await goalkeeper(Path("unused.yaml"), "retry-failed", "--help")
    assert code == 0 and "--channel {email,telegram}" in out and "--id N" in out
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "`retry-failed [--channel email\\|telegram] [--id N]`" in readme  # a table cell


async def test_the_endpoint_moves_them_and_the_daemon_sends_them_at_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"
    stored = await failed_messages(url)
    token = secrets.token_urlsafe(16)
    async with SmtpSink() as smtp:
        email = {"host": smtp.host, "port": smtp.port, "starttls": False, "timeout": 5}
        config = write_config(tmp_path, url, send_to_customers=True, email=email)
        daemon = DaemonProcess(config, env={"GOALKEEPER_HTTP__ADMIN_TOKEN": token})
        try:
            await daemon.start()
            status, _ = await daemon.request("POST", "/outbox/retry")
            assert status == 401
            status, body = await daemon.request("POST", "/outbox/retry?channel=email", token=token)
            assert status == 200, body
            assert body["moved"] == [stored["refused"].id]
            assert list(body["skipped"]) == [str(stored["rerouted"].id)]
            logged = await daemon.wait_for("failed messages moved back to pending")
            assert logged["who"].startswith("api from 127.0.0.1")
            await daemon.wait_for(
                "notification sent",
                where=lambda line: line.get("recipient") == "alice@customer.example",
            )
            assert [m.rcpt_tos for m in smtp.messages] == [("alice@customer.example",)]
            assert token not in "\n".join(daemon.raw)
        finally:
            await daemon.close()
