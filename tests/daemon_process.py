"""Run the real daemon as a subprocess and follow its JSON log lines, for the daemon tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonProcess:
    def __init__(self, config_path: Path, *, env: dict[str, str]) -> None:
        self.config_path = config_path
        self.port = free_port()
        self.env = {
            **os.environ,
            **env,
            "GOALKEEPER_HTTP__HOST": "127.0.0.1",
            "GOALKEEPER_HTTP__PORT": str(self.port),
        }
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = asyncio.Condition()
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "goalkeeper", "--config", str(self.config_path), "run",
            env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        self.session = aiohttp.ClientSession()
        await self.wait_for("started")

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            text = raw.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                line = {"event": text}
            async with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        async with self._changed:
            self.lines.append({"event": "<stderr closed>"})
            self._changed.notify_all()

    async def wait_for(
        self, event: str, *, after: int = 0, seconds: float = 60,
        where: Callable[[dict[str, Any]], bool] = lambda line: True,
    ) -> dict[str, Any]:  # fmt: skip
        """The first log line from index `after` on with this event, awaited (no polling)."""

        def found() -> dict[str, Any] | None:
            for line in self.lines[after:]:
                if line.get("event") == event and where(line):
                    return line
                if line.get("event") == "<stderr closed>":
                    raise AssertionError(f"daemon exited before {event!r}:\n" + self.log_text())
            return None

        async with asyncio.timeout(seconds), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
            result = found()
            assert result is not None
            return result

    def log_text(self) -> str:
        return "\n".join(self.raw[-80:])

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait_exit(self, seconds: float) -> int:
        assert self.process is not None
        async with asyncio.timeout(seconds):
            code = await self.process.wait()
        if self._reader is not None:
            await self._reader
        return code

    async def request(self, method: str, path: str, *, token: str | None = None) -> tuple[int, Any]:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.url + path, headers=headers) as response:
            body = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(body)
            return response.status, body

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader


def nmap_processes(marker: str) -> list[int]:
    """PIDs of nmap processes whose command line mentions `marker` (a target address)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"nmap") and any(marker.encode() in c for c in cmdline):
            pids.append(int(entry.name))
    return pids


def children(pid: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid and comm == name:
            found.append(int(entry.name))
    return found


__all__ = ["DaemonProcess", "children", "free_port", "nmap_processes", "signal"]
