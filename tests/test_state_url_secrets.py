"""The state store's password, read as SQLAlchemy reads it: hidden in every printout, refused in
the file, handed to the log redactor, whatever characters it holds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from goalkeeper import config, configsources
from goalkeeper.config import ConfigError

PASSWORDS = ["pa#ss", "pa/ss", "pa?ss", "p@ss", "pa:ss", "a#b/c?d@e:f", "plain"]


def url_with(password: str, tail: str = "db:5432/gk") -> str:
    # An @ (and only an @, of these) must be percent-encoded for SQLAlchemy to find the host.
    written = password.replace("@", "%40")
    return f"postgresql+asyncpg://gk:{written}@{tail}"


@pytest.mark.parametrize("password", PASSWORDS)
def test_redacted_url_never_shows_the_password(password: str) -> None:
    url = url_with(password, "db:5432/gk?ssl=require")
    assert make_url(url).password == password  # the one the engine will use
    redacted = config.redact_url(url)
    assert redacted == "postgresql+asyncpg://gk:***@db:5432/gk?ssl=require"
    settings = config.Settings.model_validate({"state": {"url": url}})
    assert password not in repr(config.redacted(settings))


@pytest.mark.parametrize("password", PASSWORDS)
def test_the_log_redactor_gets_the_password_as_read_and_as_written(password: str) -> None:
    settings = config.Settings.model_validate({"state": {"url": url_with(password)}})
    secrets = settings.secrets()
    assert password in secrets
    assert quote(password, safe="") in secrets


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_in_the_file_is_refused_without_echoing_it(
    tmp_path: Path, password: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"state: {{url: '{url_with(password)}'}}\n")
    with pytest.raises(ConfigError) as caught:
        configsources.load(path, environ={})
    (problem,) = caught.value.problems
    assert problem.key == "state.url"
    assert "GOALKEEPER_STATE__URL" in problem.message
    assert password not in str(caught.value)


def test_the_same_url_from_the_environment_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("{}\n")
    url = url_with("a#b/c?d@e:f")
    settings = configsources.load(path, environ={"GOALKEEPER_STATE__URL": url})
    assert settings.state.url == url


def test_an_unencoded_at_sign_is_refused_without_echoing_the_url(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("{}\n")
    url = "postgresql+asyncpg://gk:p@ss@db/gk"
    with pytest.raises(ConfigError) as caught:
        configsources.load(path, environ={"GOALKEEPER_STATE__URL": url})
    (problem,) = caught.value.problems
    assert problem.key == "state.url"
    assert "written %40" in problem.message
    assert "p@ss" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("post gres://gk:pw@db/gk", "post gres://(unreadable, not shown)"),
        ("nonsense with secret", "(unreadable, not shown)"),
    ],
)
def test_an_unreadable_url_is_redacted_to_its_scheme(url: str, shown: str) -> None:
    assert config.redact_url(url) == shown


@pytest.mark.parametrize("command", ["check-config", "findings", "run"])
def test_the_commands_never_print_the_password(tmp_path: Path, command: str) -> None:
    """A store nobody listens at (a closed port on loopback): `findings` and `run` fail to open
    it, and say so, with the URL redacted as SQLAlchemy reads it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again once the block ends: nothing listens
    password = "s3#cr/et?pw"
    path = tmp_path / "config.yaml"
    path.write_text(
        "scan: {allowed_networks: [203.0.113.0/24]}\n"
        "inventory: {source: static, static_file: inventory.yaml}\n"
        "http: {host: 127.0.0.1, port: 0}\n"
    )
    (tmp_path / "inventory.yaml").write_text("targets: []\n")
    url = f"postgresql+asyncpg://gk:{password}@127.0.0.1:{port}/gk"
    result = subprocess.run(
        [sys.executable, "-m", "goalkeeper", "--config", str(path), command],
        env={**os.environ, "GOALKEEPER_STATE__URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == (0 if command == "check-config" else 1), result.stderr
    printed = result.stdout + result.stderr
    assert f"postgresql+asyncpg://gk:***@127.0.0.1:{port}/gk" in printed
    for piece in (password, quote(password, safe=""), "cr/et"):
        assert piece not in printed
