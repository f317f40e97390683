"""Point openstacksdk at a simulated cloud through OS_* variables, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def use_os_environment(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], tmp_path: Path
) -> None:
    """Only the given OS_* variables, and no clouds.yaml but the test's own."""
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
