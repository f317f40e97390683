"""Settings: defaults, environment overrides, and every bad input named with its key."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest

from goalkeeper import config
from goalkeeper.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ=environ or {})
    return [str(p) for p in caught.value.problems]


def test_repository_config_is_valid_and_matches_defaults() -> None:
    settings = config.load(Path(__file__).parent.parent / "config.yaml", environ={})
    assert settings == config.Settings()


def test_environment_overrides_nested_keys_and_lists(tmp_path: Path) -> None:
    path = write(tmp_path, "environment: stage\nnotify: {email: {port: 25}}\n")
    settings = config.load(
        path,
        environ={
            "GOALKEEPER_ENVIRONMENT": "prod",
            "GOALKEEPER_NOTIFY__EMAIL__PASSWORD": "s3cret-pass",
            "GOALKEEPER_NOTIFY__EMAIL__STARTTLS": "false",
            "GOALKEEPER_SCAN__ALLOWED_NETWORKS": '["203.0.113.0/24", "198.51.100.7"]',
            "GOALKEEPER_CONFIG": "ignored.yaml",
            "UNRELATED": "x",
        },
    )
    assert settings.environment == "prod"
    assert settings.notify.email.port == 25  # the file still counts where env is silent
    assert settings.notify.email.starttls is False
    assert settings.scan.allowed_networks == (
        ip_network("203.0.113.0/24"),
        ip_network("198.51.100.7/32"),
    )
    assert settings.secrets() == ["s3cret-pass"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("scan: {bogus: 1}\n", "scan.bogus: unknown key"),
        ("scan: {allowed_networks: [10.0.0.0/33]}\n", "scan.allowed_networks"),
        ("scan: {exclude: [not-a-cidr]}\n", "scan.exclude"),
        ("scan: {ports: [{port: 0, service: x}]}\n", "scan.ports[0].port"),
        ("scan: {ports: [{port: 70000, service: x}]}\n", "scan.ports[0].port"),
        ("scan: {ports: [{port: 53, protocol: sctp, service: dns}]}\n", "scan.ports[0].protocol"),
        ("scan: {nmap_arguments: '-Pn -iL /etc/hosts'}\n", "scan.nmap_arguments"),
        ("schedule: {cron: '0 6 * *'}\n", "schedule.cron"),
        ("schedule: {timezone: Mars/Olympus}\n", "schedule.timezone"),
        ("environment: production\n", "environment"),
        ("notify: {ops_email: 'ops@example.com\\r\\nBcc: x@y.z'}\n", "notify.ops_email"),
        ("notify: {email: {starttls: true, ssl: true}}\n", "notify.email"),
        ("notify: {telegram: {enabled: true}}\n", "notify.telegram"),
        ("notify: {email: {password: hunter2}}\n", "notify.email.password"),
        ("state: {url: 'mysql://x'}\n", "state.url"),
        ("- a list\n", "the top level must be a mapping"),
        ("scan: [unclosed\n", "line 2, column 1"),
    ],
)
def test_each_bad_input_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, text))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "environment: nope\nscan: {batch_size: 0, ports: [{port: 99999, service: x}]}\n"
        "http: {port: -1, extra: 1}\n",
    )
    found = problems(path)
    keys = {p.split(": ")[1] for p in found}
    assert {
        "environment",
        "scan.batch_size",
        "scan.ports[0].port",
        "http.port",
        "http.extra",
    } <= keys


def test_problem_from_environment_names_the_variable(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "{}\n"), {"GOALKEEPER_SCAN__MAX_CONCURRENT_SCANS": "zero"})
    assert found[0].startswith("environment GOALKEEPER_SCAN__MAX_CONCURRENT_SCANS: ")


def test_secret_in_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "inventory: {fleio: {token: tok-123456789}}\n"))
    assert "GOALKEEPER_INVENTORY__FLEIO__TOKEN" in found[0]
    assert "tok-123456789" not in "\n".join(found)


def test_secret_value_never_in_validation_errors(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "{}\n"), {"GOALKEEPER_HTTP__ADMIN_TOKEN__X": "hunter2-secret"})
    assert "hunter2-secret" not in "\n".join(found)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_redacted_hides_every_secret() -> None:
    settings = config.Settings.model_validate(
        {
            "notify": {"email": {"password": "pw-one"}, "telegram": {"token": "123:abc"}},
            "http": {"admin_token": "adm-two"},
            "inventory": {"fleio": {"token": "fl-three"}},
            "state": {"url": "postgresql+asyncpg://gk:db-four@db:5432/gk"},
        }
    )
    text = repr(config.redacted(settings))
    for secret in ("pw-one", "123:abc", "adm-two", "fl-three", "db-four"):
        assert secret not in text
    assert "postgresql+asyncpg://gk:***@db:5432/gk" in text
