"""Settings: defaults, environment overrides, and every bad input named with its key."""

from __future__ import annotations

import os
import subprocess
import sys
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from goalkeeper import config, configsources, validity
from goalkeeper.config import ConfigError
from goalkeeper.validity import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    return [str(p) for p in caught.value.problems]


def test_repository_config_is_valid_and_matches_defaults() -> None:
    settings = configsources.load(Path(__file__).parent.parent / "config.yaml", environ={})
    assert settings == config.Settings()


def test_environment_overrides_nested_keys_and_lists(tmp_path: Path) -> None:
    path = write(tmp_path, "environment: stage\nnotify: {email: {port: 25}}\n")
    settings = configsources.load(
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
        (
            "scan: {egress_addresses: [192.0.2.0/24]}\n",
            "scan.egress_addresses: [0] '192.0.2.0/24': a network, not an address",
        ),
        (
            "scan: {egress_addresses: [scanner.example]}\n",
            "scan.egress_addresses: [0] 'scanner.example': not an IP address",
        ),
        (
            "scan: {egress_addresses: [192.0.2.7, 2001:db8::7, 192.0.2.7]}\n",
            "scan.egress_addresses: [2] 192.0.2.7 is listed twice",
        ),
        ("scan: {egress_addresses: 192.0.2.7}\n", "scan.egress_addresses: must be a list"),
        ("schedule: {cron: '0 6 * *'}\n", "schedule.cron"),
        ("schedule: {timezone: Mars/Olympus}\n", "schedule.timezone"),
        ("environment: production\n", "environment"),
        ("notify: {ops_email: 'ops@example.com\\r\\nBcc: x@y.z'}\n", "notify.ops_email"),
        ("notify: {email: {starttls: true, ssl: true}}\n", "notify.email"),
        ("notify: {telegram: {enabled: true}}\n", "notify.telegram"),
        ("notify: {email: {password: hunter2}}\n", "notify.email.password"),
        ("state: {url: 'mysql://x'}\n", "state.url"),
        ("- a list\n", "the top level must be a mapping"),
        # BaseSettings would take it as its own argument (a secrets folder) if it got through.
        ("_secrets_dir: /etc\n", "_secrets_dir: unknown key"),
        ("scan: [unclosed\n", "line 2, column 1"),
    ],
)
def test_each_bad_input_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, text))
    assert any(expected in p for p in found), found


def test_egress_addresses_are_read_as_addresses(tmp_path: Path) -> None:
    path = write(tmp_path, "scan: {egress_addresses: [192.0.2.7, ' 2001:db8::7']}\n")
    settings = load_settings(path, environ={})
    assert settings.scan.egress_addresses == (ip_address("192.0.2.7"), ip_address("2001:db8::7"))
    assert config.Settings().scan.egress_addresses == ()


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


FLEIO_URL = "https://billing.example.net/backend/staffapi"


@pytest.mark.parametrize(
    ("fleio", "environ", "expected"),
    [
        # A URL without its token: every owner would be NOT FOUND without anyone choosing it.
        ({"url": FLEIO_URL}, {}, ["inventory.fleio.token: set GOALKEEPER_INVENTORY__FLEIO__TOKEN"]),
        # A token without a URL: the operator meant owners to be read.
        ({}, {"GOALKEEPER_INVENTORY__FLEIO__TOKEN": "tok-1"}, ["inventory.fleio.url: "]),
        # Switched on explicitly, with nothing else.
        ({"enabled": True}, {}, ["inventory.fleio.url: ", "inventory.fleio.token: "]),
        ({"enabled": True, "url": FLEIO_URL}, {}, ["inventory.fleio.token: "]),
    ],
)
def test_a_half_configured_fleio_is_refused(
    tmp_path: Path, fleio: dict[str, object], environ: dict[str, str], expected: list[str]
) -> None:
    text = yaml.safe_dump({"inventory": {"source": "openstack", "fleio": fleio}})
    found = problems(write(tmp_path, text), environ)
    assert len(found) == len(expected)
    for problem, start in zip(found, expected, strict=True):
        assert problem.startswith(f"{tmp_path / 'config.yaml'}: {start}")
        assert "inventory.fleio.enabled: false" in problem  # the way out is named
    assert "tok-1" not in "\n".join(found)


@pytest.mark.parametrize(
    ("fleio", "source"),
    [
        ({"enabled": False, "url": FLEIO_URL}, "openstack"),  # owners off by choice
        ({"enabled": False}, "openstack"),
        ({}, "openstack"),  # nothing set: loads, and every tick reports an incident
        ({"url": FLEIO_URL}, "static"),  # a static inventory carries its own owners
    ],
)
def test_fleio_may_be_off_by_choice_or_unused(
    tmp_path: Path, fleio: dict[str, object], source: str
) -> None:
    text = yaml.safe_dump({"inventory": {"source": source, "fleio": fleio}})
    settings = configsources.load(write(tmp_path, text), environ={})
    assert settings.inventory.fleio.wanted is False or source == "static"


def test_fleio_with_url_and_token_loads(tmp_path: Path) -> None:
    text = yaml.safe_dump({"inventory": {"fleio": {"url": FLEIO_URL, "min_resolved_share": 0.8}}})
    settings = configsources.load(
        write(tmp_path, text), environ={"GOALKEEPER_INVENTORY__FLEIO__TOKEN": "tok-2"}
    )
    assert settings.inventory.fleio.wanted is True
    assert settings.inventory.fleio.min_resolved_share == 0.8


@pytest.mark.parametrize("share", [-0.1, 1.5, "half"])
def test_min_resolved_share_is_a_share(tmp_path: Path, share: object) -> None:
    text = yaml.safe_dump({"inventory": {"fleio": {"enabled": False, "min_resolved_share": share}}})
    (problem,) = problems(write(tmp_path, text))
    assert "inventory.fleio.min_resolved_share" in problem


def test_check_config_exits_2_for_a_fleio_url_without_a_token(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump({"inventory": {"fleio": {"url": FLEIO_URL}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALKEEPER_")}
    result = subprocess.run(
        [sys.executable, "-m", "goalkeeper", "--config", str(path), "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "inventory.fleio.token" in result.stderr
    off = path.with_name("off.yaml")
    off.write_text(
        yaml.safe_dump(
            {
                "inventory": {"fleio": {"url": FLEIO_URL, "enabled": False}},
                "scan": {"allowed_networks": ["203.0.113.0/24"]},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "goalkeeper", "--config", str(off), "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_section_check_reports_together_with_other_sections_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def schedule_check(schedule: config.ScheduleSettings) -> list[str]:
        seen.append(schedule.cron)
        return ["never fires"]

    monkeypatch.setattr(validity, "schedule_problems", schedule_check)
    path = write(tmp_path, "schedule: {cron: '0 0 30 2 *'}\nscan: {batch_size: 0}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert {p.key for p in caught.value.problems} == {"scan.batch_size", "schedule.cron"}
    assert seen == ["0 0 30 2 *"]


def test_a_bad_cron_shows_with_every_other_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "schedule: {cron: '0 0 30 2 *'}\nscan: {batch_size: 0}\n"
        "inventory: {fleio: {url: 'https://billing.example.net/api'}}\n",
    )
    found = problems(path)
    assert f"{path}: schedule.cron: never fires: no date matches it in the next 100 years" in found
    keys = {p.split(": ")[1] for p in found}
    assert {"schedule.cron", "scan.batch_size", "inventory.fleio.token"} <= keys


def test_a_bad_cron_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "{}\n"), {"GOALKEEPER_SCHEDULE__CRON": "61 * * * *"})
    assert len(found) == 1
    assert found[0].startswith("environment GOALKEEPER_SCHEDULE__CRON: schedule.cron: ")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("GOALKEEPER_FOO__BAR", "foo.bar"),
        ("GOALKEEPER_FOO", "foo"),
        ("GOALKEEPER_SCAN__BOGUS", "scan.bogus"),
    ],
)
def test_an_unknown_variable_is_reported_as_the_variable(
    tmp_path: Path, name: str, key: str
) -> None:
    path = write(tmp_path, "{}\n")
    assert problems(path, {name: "1"}) == [f"environment {name}: {key}: unknown key"]


def test_a_bad_value_below_a_list_names_its_variable(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "{}\n"), {"GOALKEEPER_SCAN__PORTS__X": "1"})
    assert found == [
        "environment GOALKEEPER_SCAN__PORTS__X: scan.ports: Input should be a valid tuple"
    ]


def test_check_config_shows_a_bad_cron_with_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "schedule: {cron: '0 0 30 2 *'}\nscan: {batch_size: 0}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALKEEPER_")}
    result = subprocess.run(
        [sys.executable, "-m", "goalkeeper", "--config", str(path), "check-config"],
        env=env | {"GOALKEEPER_HTTP__PORT": "x"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid configuration (3 problems)" in result.stderr
    assert f"{path}: schedule.cron: never fires" in result.stderr
    assert f"{path}: scan.batch_size: " in result.stderr
    assert "environment GOALKEEPER_HTTP__PORT: http.port: " in result.stderr


def test_a_new_secret_field_is_refused_in_the_file_by_its_type(tmp_path: Path) -> None:
    class NewSection(config.Model):
        api_key: SecretStr | None = None
        name: str = ""

    class Extended(config.Settings):
        new: NewSection = NewSection()

    assert set(config.secret_keys()) == {
        "inventory.fleio.token",
        "notify.email.password",
        "notify.telegram.token",
        "http.admin_token",
    }
    assert "new.api_key" in config.secret_keys(Extended)
    assert "new.name" not in config.secret_keys(Extended)
    assert config.password_url_keys(Extended) == ["state.url"]
    path = write(tmp_path, "new: {api_key: k-123456, name: x}\n")
    with pytest.raises(ConfigError) as caught:
        configsources.load(path, environ={}, settings_cls=Extended)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: new.api_key: secrets may not be written in the file; set GOALKEEPER_NEW__API_KEY"
    ]
    settings = configsources.load(
        write(tmp_path, "new: {name: x}\n"),
        environ={"GOALKEEPER_NEW__API_KEY": "k-123456"},
        settings_cls=Extended,
    )
    assert settings.secrets() == ["k-123456"]
    assert "k-123456" not in repr(config.redacted(settings))


def test_an_alias_bomb_in_an_environment_variable_is_refused(tmp_path: Path) -> None:
    levels = ["&a [" + ", ".join(["lol"] * 9) + "]"]
    levels += [
        f"&{n} [" + ", ".join([f"*{p}"] * 9) + "]"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    bomb = "[" + ", ".join(levels) + "]"  # 9^9 values once the aliases are copied out
    found = problems(write(tmp_path, "{}\n"), {"GOALKEEPER_SCAN__EXCLUDE": bomb})
    assert found == ["environment GOALKEEPER_SCAN__EXCLUDE: scan.exclude: must be a list of "
                     "IP addresses or CIDR networks"]  # fmt: skip
