"""Hostile and broken configs through the real CLI: exit 2, the key or file named, no traceback.

Each case runs `goalkeeper --config X check-config` (and `scan` or `run` where the issue names
them) in a subprocess: `goalkeeper.cli.main`, the console script's entry point. A case that hangs
or blows up is cut off by the subprocess timeout, counted from when the CLI has imported its
modules (that start-up is the same for every config, and is not what is tested here): one
second, stretched by the machine's run queue, since several engineers' tests share two cores.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Tells the test through a pipe when the imports are done, then is the CLI. The CLI loads the
# daemon's and the tick's modules only in the commands that use them, so they are imported here
# first: the time they take is start-up, not handling.
CLI = (
    "import os, sys; import goalkeeper.cli as cli; import goalkeeper.daemon, goalkeeper.wiring; "
    "ready = int(sys.argv[1]); os.write(ready, b'.'); os.close(ready); "
    "sys.exit(cli.main(sys.argv[2:]))"
)
IMPORT_GUARD_SECONDS = 120  # only so a broken import cannot hang the suite
SCAN = "scan: {allowed_networks: [127.0.0.0/8], allow_loopback: true}\n"
VALID = SCAN + "state: {url: 'sqlite+aiosqlite:///./s.db'}\n"
LAUGHS = "lol:\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  {name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def handling_timeout() -> float:
    return 1.0 + os.getloadavg()[0] / (os.cpu_count() or 1)


def goalkeeper(config: Path | str, command: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    read_end, write_end = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALKEEPER_")}
    args = [sys.executable, "-c", CLI, str(write_end), "--config", str(config), command]
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
        pass_fds=(write_end,),
    ) as process:  # fmt: skip
        os.close(write_end)
        try:
            ready, _, _ = select.select([read_end], [], [], IMPORT_GUARD_SECONDS)
            assert ready, "the CLI did not finish its imports"
        finally:
            os.close(read_end)
        try:
            stdout, stderr = process.communicate(timeout=handling_timeout())
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"no answer within {handling_timeout():.1f} s; stderr: {stderr[-2000:]}")
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def text_file(text: str | bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "config.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    return make


def fifo(tmp: Path) -> Path:
    path = tmp / "config.yaml"
    os.mkfifo(path)
    return path


def huge(tmp: Path) -> Path:
    path = tmp / "config.yaml"
    with path.open("w") as out:
        out.write(VALID)
        for _ in range(20):
            out.write("# " + "x" * (1 << 20) + "\n")
    return path


def static_inventory(content: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "inventory.yaml").write_bytes(content)
        path = tmp / "config.yaml"
        path.write_text(VALID + "inventory: {source: static, static_file: inventory.yaml}\n")
        return path

    return make


def static_fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "inventory.yaml")
    path = tmp / "config.yaml"
    path.write_text(VALID + "inventory: {source: static, static_file: inventory.yaml}\n")
    return path


CASES: dict[str, tuple[Callable[[Path], Path | str], tuple[str, ...]]] = {
    "non-UTF-8 config": (
        text_file(VALID.encode() + b"environment: \xff\xfe\n"),
        ("config.yaml: line 3: not UTF-8",),
    ),
    "non-UTF-8 static file": (
        static_inventory(b"targets:\n  - {address: 127.0.0.1, server_name: \xe9t\xe9}\n"),
        ("inventory.yaml: line 2: not UTF-8",),
    ),
    "static file is a FIFO": (static_fifo, ("inventory.yaml: is a FIFO",)),
    "deeply nested": (
        text_file(VALID + "scan_x: " + "[" * 5000 + "]" * 5000 + "\n"),
        ("config.yaml: line 3", "nested deeper than 32 levels"),
    ),
    "billion laughs": (
        text_file(LAUGHS + "scan: {allowed_networks: [127.0.0.0/8], exclude: *i}\n"),
        ("config.yaml: line", "more than 100000 values"),
    ),
    "alias to itself": (text_file("scan: &a {exclude: [*a]}\n"), ("refers to itself",)),
    "impossible date": (text_file(VALID + "environment: 2020-13-45\n"), ("line 3", "month")),
    "control character": (text_file(VALID + 'environment: "\x07"\n'), ("config.yaml:",)),
    "/dev/zero": (lambda tmp: "/dev/zero", ("/dev/zero: is a device",)),
    "FIFO": (fifo, ("config.yaml: is a FIFO",)),
    "20 MB": (huge, ("config.yaml: is larger than 1024 KiB",)),
    "folder": (lambda tmp: tmp, ("is a folder, not a regular file",)),
    "NUL in static_file": (
        text_file(VALID + 'inventory: {source: static, static_file: "a\\0b"}\n'),
        ("NUL character",),
    ),
    "http.host not a host": (text_file(VALID + "http: {host: 'not a host!'}\n"), ("http.host",)),
    "http.host numeric": (text_file(VALID + "http: {host: 300.1.2.3}\n"), ("http.host",)),
    "state.url port": (
        text_file(SCAN +
                  "state: {url: 'postgresql+asyncpg://gk@db:abc/gk'}\n"),
        ("state.url: the port is not a number",),
    ),
    "reminder_days .inf": (
        text_file(VALID + "notify: {reminder_days: .inf}\n"),
        ("notify.reminder_days",),
    ),
    "reminder_days 1e300": (
        text_file(VALID + "notify: {reminder_days: 1e300}\n"),
        ("notify.reminder_days",),
    ),
    "latent_days .inf": (
        text_file(VALID + "notify: {latent_days: .inf}\n"),
        ("notify.latent_days",),
    ),
    "latent_days -1": (
        text_file(VALID + "notify: {latent_days: -1}\n"),
        ("notify.latent_days",),
    ),
    "max_tick_seconds .inf": (
        text_file(VALID + "daemon: {max_tick_seconds: .inf}\n"),
        ("daemon.max_tick_seconds",),
    ),
    "cron never fires": (
        text_file(VALID + "schedule: {cron: '0 0 30 2 *'}\n"),
        ("schedule.cron: never fires",),
    ),
    "cron never fires, among other problems": (
        text_file(VALID + "schedule: {cron: '0 0 31 4 *'}\nhttp: {port: -1}\n"
                  "notify: {templates_dir: missing}\n"),
        ("3 problems", "schedule.cron: never fires", "http.port", "notify.templates_dir"),
    ),
    "templates_dir missing": (
        text_file(VALID + "notify: {templates_dir: /nonexistent/templates}\n"),
        ("notify.templates_dir: '/nonexistent/templates' does not exist",),
    ),
    "templates_dir a file": (
        text_file(VALID + "notify: {templates_dir: config.yaml}\n"),
        ("notify.templates_dir: 'config.yaml' is not a folder",),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_check_config_refuses_with_the_key_named(name: str, tmp_path: Path) -> None:
    make, expected = CASES[name]
    assert_refused(goalkeeper(make(tmp_path), "check-config", cwd=tmp_path),
                   *expected)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("non-UTF-8 static file", "scan"),
        ("http.host not a host", "run"),
        ("cron never fires", "run"),
        ("reminder_days .inf", "scan"),
    ],
)
def test_scan_and_run_refuse_too(name: str, command: str, tmp_path: Path) -> None:
    make, expected = CASES[name]
    assert_refused(goalkeeper(make(tmp_path), command, cwd=tmp_path), *expected)


def test_run_says_in_one_line_that_it_cannot_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = text_file(VALID + f"http: {{host: 127.0.0.1, port: {port}}}\n")(tmp_path)
        result = goalkeeper(config, "run", cwd=tmp_path)
    assert_refused(result, f"goalkeeper: cannot listen on 127.0.0.1 port {port} (http.host")
    lines = [line for line in result.stderr.splitlines() if line.startswith("goalkeeper:")]
    assert len(lines) == 1, result.stderr


def test_the_bounds_leave_a_real_config_alone(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    config = text_file(
        "scan: {allowed_networks: &ours [127.0.0.0/8], exclude: *ours, allow_loopback: true}\n"
        "schedule: {cron: '0 0 29 2 *'}\n"  # fires in leap years only, but fires
        "notify: {templates_dir: templates, reminder_days: 365}\n"
        "http: {host: probe-1.example.net.}\n"
    )(tmp_path)
    result = goalkeeper(config, "check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "probe-1.example.net." in result.stdout
    assert "exclude:\n  - 127.0.0.0/8" in result.stdout  # the alias was read
