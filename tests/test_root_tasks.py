"""A root task of the daemon that dies stops the daemon loudly (in-process, on a real store)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from goalkeeper.config import Settings
from goalkeeper.daemon import Daemon
from goalkeeper.delivery import Delivery
from tests.daemon_process import free_port


def settings(tmp_path: Path) -> Settings:
    (tmp_path / "inventory.yaml").write_text("targets: []\n")
    return Settings.model_validate(
        {
            "scan": {"allowed_networks": ["127.44.0.0/16"], "allow_loopback": True},
            "inventory": {"source": "static", "static_file": str(tmp_path / "inventory.yaml")},
            "notify": {"email": {"host": "127.0.0.1", "port": free_port(), "starttls": False}},
            "http": {"host": "127.0.0.1", "port": 0},
            "daemon": {"shutdown_timeout": 5},
            "state": {"url": f"sqlite+aiosqlite:///{tmp_path / 'state.db'}"},
        }
    )


async def test_a_root_task_that_dies_stops_the_daemon_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_resend(self: Delivery) -> int:
        raise OSError("the outbox pass fell over")

    monkeypatch.setattr(Delivery, "resend_pending", broken_resend)
    daemon = Daemon(settings(tmp_path), tmp_path / "config.yaml")
    with capture_logs() as lines, pytest.raises(RuntimeError, match="goalkeeper-resend died"):
        await daemon.serve()
    (died,) = [line for line in lines if line["event"] == "task died: stopping"]
    assert (died["log_level"], died["task"], died["exc_info"]) == (
        "critical",
        "goalkeeper-resend",
        True,
    )
    assert died["error"] == "the outbox pass fell over"
    assert not [line for line in lines if line["event"] == "stopped"]  # not a clean stop
