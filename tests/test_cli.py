"""The command line as an operator meets it: --version, help, exit codes, refusals in one line.

Each case runs `python -m goalkeeper` as a subprocess, exactly as an operator runs it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from goalkeeper.cli import build_parser

SHIPPED = Path(__file__).parent.parent / "config.yaml"


def goalkeeper(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALKEEPER_")}
    return subprocess.run(
        [sys.executable, "-m", "goalkeeper", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version(tmp_path: Path) -> None:
    result = goalkeeper("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"goalkeeper {importlib.metadata.version('goalkeeper')}\n"


def test_every_subcommand_has_a_description() -> None:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {
        "scan", "run", "findings", "check-config", "retry-failed", "demo",
    }  # fmt: skip
    undescribed = [name for name, parser in commands.choices.items() if not parser.description]
    assert not undescribed


def test_findings_help_says_it_is_read_only(tmp_path: Path) -> None:
    result = goalkeeper("findings", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Read-only" in result.stdout


def write_config(folder: Path, url: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(f"scan: {{allowed_networks: [203.0.113.0/24]}}\nstate: {{url: '{url}'}}\n")
    return path


def test_findings_creates_nothing_where_no_store_is(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "deeper" / "state.db"
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{missing}")
    result = goalkeeper("--config", str(config), "findings", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"goalkeeper: no state store at {missing} (state.url)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no folder, no file


def test_findings_on_a_corrupt_database_exits_1_as_readme_says(tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    database.write_bytes(b"this is not a SQLite database, whatever its name says\n" * 100)
    config = write_config(tmp_path, f"sqlite+aiosqlite:///{database}")
    result = goalkeeper("--config", str(config), "findings", cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"goalkeeper: cannot open the state store sqlite+aiosqlite:///{database}"
    )
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    (row,) = [r for r in readme.splitlines() if r.startswith("| `findings ")]
    assert "1 the state store cannot be opened or read (a corrupt database too)" in row


@pytest.mark.parametrize("command", ["check-config", "scan", "run"])
def test_an_empty_scope_is_refused_alike_with_what_to_set(command: str, tmp_path: Path) -> None:
    result = goalkeeper("--config", str(SHIPPED), command, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("goalkeeper:")]
    assert line == (
        "goalkeeper: scan.allowed_networks is empty, so nothing may be scanned: set it to the "
        "cloud's public ranges, e.g. allowed_networks: [203.0.113.0/24] "
        """(or GOALKEEPER_SCAN__ALLOWED_NETWORKS='["203.0.113.0/24"]')"""
    )
    assert "warning:" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before any state store was made


# What a short command must not load: the tick's libraries cost ~0.6 s of import that `--help`,
# `check-config` and `findings` never use (benchmarks/startup.py measures the whole process).
TICK_LIBRARIES = ("openstack", "aiohttp", "jinja2", "nmap", "aiosmtplib", "tenacity", "alembic")


def _loaded_after(code: str, cwd: Path) -> set[str]:
    probe = (
        f"{code}\nimport sys\nprint(' '.join(sorted({{m.partition('.')[0] for m in sys.modules}})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_cli_module_loads_none_of_the_tick_s_libraries(tmp_path: Path) -> None:
    loaded = _loaded_after("import goalkeeper.cli", tmp_path)
    assert "goalkeeper" in loaded  # the probe sees what was imported
    heavy = {*TICK_LIBRARIES, "apscheduler", "sqlalchemy", "prometheus_client"}
    assert loaded.isdisjoint(heavy), loaded & heavy


def test_check_config_loads_none_of_the_tick_s_libraries(tmp_path: Path) -> None:
    code = (
        "import contextlib, io\nfrom goalkeeper.cli import main\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        f"    main(['--config', {str(SHIPPED)!r}, 'check-config'])"
    )
    loaded = _loaded_after(code, tmp_path)
    assert "pydantic_settings" in loaded  # the check really ran
    assert loaded.isdisjoint(TICK_LIBRARIES), loaded & set(TICK_LIBRARIES)


def test_findings_loads_none_of_the_tick_s_libraries(tmp_path: Path) -> None:
    store = tmp_path / "state.db"
    code = (
        "import asyncio, contextlib, io, os\nfrom goalkeeper.cli import main\n"
        "from goalkeeper.state import StateStore\n"
        f"url = 'sqlite+aiosqlite:///{store}'\n"
        "async def make():\n    async with StateStore.opened(url):\n        pass\n"
        "asyncio.run(make())\nos.environ['GOALKEEPER_STATE__URL'] = url\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['--config', {str(SHIPPED)!r}, 'findings']) == 0\n"
    )
    loaded = _loaded_after(code, tmp_path)
    assert "sqlalchemy" in loaded  # it read the store
    assert loaded.isdisjoint(TICK_LIBRARIES), loaded & set(TICK_LIBRARIES)


def test_json_is_indented_for_a_terminal_and_one_line_for_a_program() -> None:
    import io
    import json

    from goalkeeper.cli import print_json

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    data = {"findings": [{"port": 6379, "service": "redis"}], "targets": 1}
    piped, terminal = io.StringIO(), Terminal()
    print_json(data, piped)
    print_json(data, terminal)

    assert piped.getvalue().count("\n") == 1 and json.loads(piped.getvalue()) == data
    assert (
        terminal.getvalue().startswith('{\n  "findings": [')
        and json.loads(terminal.getvalue()) == data
    )
