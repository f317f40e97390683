"""The nmap process itself: what it inherits, which options it always gets, and that it dies
with the process that started it (127.47.0.0/16 is this suite's range; nothing listens there).

nmap is real; a small Python script stands in its place first, to tell the test its pid and the
environment it was given, then execs the real nmap under the same pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_address
from pathlib import Path

import pytest

from goalkeeper.config import ScanSettings
from goalkeeper.model import PortSpec, Transport
from goalkeeper.scanning.nmap import NmapScanner

REPOSITORY = Path(__file__).resolve().parent.parent
SECRET = "hunter2-only-for-goalkeeper"
DEATH_DEADLINE_SECONDS = 20.0  # generous on a loaded machine: a leak keeps nmap 40 s and more


def recording_nmap(directory: Path, report: Path) -> Path:
    """An executable that appends {pid, argv, env} to `report`, then becomes the real nmap."""
    path = directory / "nmap"
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""\
            import json, os, sys
            with open({str(report)!r}, "a") as out:
                out.write(json.dumps({{"pid": os.getpid(), "argv": sys.argv[1:],
                                       "env": dict(os.environ)}}) + "\\n")
            os.execvp("nmap", ["nmap", *sys.argv[1:]])
            """
        )
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_nmap_gets_no_secret_and_always_minus_n_and_minus_pn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "runs.jsonl"
    fake = recording_nmap(tmp_path, report)
    settings = ScanSettings(nmap_arguments="-T4", privileged=False, allow_loopback=True)
    monkeypatch.setenv("GOALKEEPER_NOTIFY__EMAIL__PASSWORD", SECRET)
    async with NmapScanner(settings, nmap_path=str(fake)) as scanner:
        result = await scanner.scan(
            [ip_address("127.47.0.1")], [PortSpec(6379, Transport.TCP, "redis")]
        )
    assert result.scanned == {ip_address("127.47.0.1")}
    # One run: the scan. python-nmap's parse no longer starts `nmap -V` with our environment.
    (run,) = [json.loads(line) for line in report.read_text().splitlines()]
    assert run["env"] == {"PATH": os.environ["PATH"], "LC_ALL": "C"}
    assert SECRET not in json.dumps(run)
    assert "-n" in run["argv"]
    assert "-Pn" in run["argv"]


CHILD = """
import asyncio, sys
from ipaddress import ip_address
from goalkeeper.config import ScanSettings
from goalkeeper.model import PortSpec, Transport
from goalkeeper.scanning.nmap import NmapScanner

async def main() -> None:
    # At one probe a second, 40 closed ports keep nmap busy for 40 s: long past the SIGKILL.
    settings = ScanSettings(privileged=False, allow_loopback=True, max_rate=1,
                            max_rate_per_subnet=1, nmap_arguments="-Pn -n --max-retries 0")
    async with NmapScanner(settings, nmap_path=sys.argv[1]) as scanner:
        await scanner.scan([ip_address("127.47.1.1")],
                           [PortSpec(port, Transport.TCP, "x") for port in range(7000, 7040)])

asyncio.run(main())
"""


@asynccontextmanager
async def scanning_child(fake: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(fake),
        cwd=REPOSITORY,
        env={**os.environ, "GOALKEEPER_NOTIFY__EMAIL__PASSWORD": SECRET},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield child
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()


async def exited(pid: int) -> None:
    """Returns once process `pid` (not our child) has exited: its pidfd turns readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def test_nmap_dies_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    fake = recording_nmap(tmp_path, fifo)
    async with scanning_child(fake) as child:
        # The fake's write to the FIFO returns once this read has its line: nmap is starting.
        run = json.loads(await asyncio.to_thread(fifo.read_text))
        nmap_pid = run["pid"]
        environ = await asyncio.to_thread(Path(f"/proc/{nmap_pid}/environ").read_bytes)
        assert SECRET.encode() not in environ
        child.send_signal(signal.SIGKILL)
        await child.wait()
        try:
            async with asyncio.timeout(DEATH_DEADLINE_SECONDS):
                await exited(nmap_pid)
        finally:  # a failed test leaves no nmap behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(nmap_pid, signal.SIGKILL)
    assert child.returncode == -signal.SIGKILL
