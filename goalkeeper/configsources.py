"""Where each setting comes from: config.yaml, then `GOALKEEPER_<SECTION>__<KEY>` variables.

pydantic-settings reads the variables and merges them over the file; what it does not do is kept
here: the file is read through goalkeeper.yamlfile's bounds, every value remembers its origin so
a problem names the file or the variable that set it, and secrets (SecretStr and PasswordUrl
fields, found by type) are refused in the file. Nothing here touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

from goalkeeper.config import (
    CONFIG_PATH_VARIABLE,
    ENV_PREFIX,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_VALUES,
    ConfigError,
    Problem,
    Settings,
    database_url,
    password_url_keys,
    secret_keys,
)
from goalkeeper.yamlfile import UnreadableFile, key_path, parse_yaml, read_yaml

Key = tuple[str, ...]


class YamlFileSource(PydanticBaseSettingsSource):
    """config.yaml through yamlfile's limits (regular file, size, nesting, aliases, UTF-8)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.problems: list[Problem] = []  # the file cannot be used
        self.unknown: list[Problem] = []  # keys that are no section, reported with the rest
        self.data = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            data = read_yaml(self.path, max_bytes=MAX_CONFIG_BYTES, max_nodes=MAX_CONFIG_VALUES)
        except UnreadableFile as err:
            self.problems.append(Problem(source=str(self.path), key="", message=str(err)))
            return {}
        if data is None:
            return {}
        if not isinstance(data, dict):
            message = "the top level must be a mapping"
            self.problems.append(Problem(source=str(self.path), key="", message=message))
            return {}
        # Refused here, not by validation: BaseSettings takes a key such as `_secrets_dir` as
        # an argument of its own, so only the sections reach it.
        for key in data:
            if key not in self.settings_cls.model_fields:
                message = "unknown key" if isinstance(key, str) else "Keys should be strings"
                where = key_path((key,)) if isinstance(key, str | int) else repr(key)
                self.unknown.append(Problem(source=str(self.path), key=where, message=message))
        return {k: v for k, v in data.items() if k in self.settings_cls.model_fields}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.data


class EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' nested variables, read from the mapping given (not only os.environ),
    with a list or mapping value written as YAML flow (`[10.0.0.0/8]`), bounded like the file."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {k: v for k, v in environ.items() if k.upper() != CONFIG_PATH_VARIABLE}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ,
            self.case_sensitive,
            self.env_ignore_empty,
            self.env_parse_none_str,
        )

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        text = str(value).strip()
        if text[:1] not in ("[", "{"):
            return value
        try:
            return parse_yaml(text, max_nodes=MAX_CONFIG_VALUES)
        except UnreadableFile:
            return value  # then refused by the field's own check, naming the variable


@dataclass(frozen=True)
class Loaded:
    """What the sources gave, validated: `settings` when all is valid; otherwise the problems
    and `partial`, the valid sections with the invalid ones at their defaults (or None), so
    checks of valid sections still report together with everything else."""

    path: Path
    origin: Mapping[Key, str]  # a key set by a variable, and the variable's name
    problems: tuple[Problem, ...]
    settings: Settings | None
    partial: Settings | None
    invalid_sections: frozenset[str]

    def source_of(self, key: str) -> str:
        """Where the value at the dotted `key` came from, as a Problem's source."""
        return _source(tuple(key.split(".")), self.origin, str(self.path))


def read(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    settings_cls: type[Settings] = Settings,
) -> Loaded:
    """Read and validate the file and the variables; collect every problem, raise nothing."""
    environ = os.environ if environ is None else environ
    file = YamlFileSource(settings_cls, path)
    origin, problems = _variables(environ, settings_cls)
    problems = [*file.problems, *problems, *_secrets_in_file(file.data, str(path), settings_cls)]
    if problems:
        return Loaded(path, origin, tuple(problems), None, None, frozenset())
    try:
        variables = EnvironmentSource(settings_cls, environ)()
    except SettingsError as err:  # names the field, never the value
        problem = Problem(source="environment", key="", message=str(err))
        return Loaded(path, origin, (problem,), None, None, frozenset())
    merged = _deep_merge(file(), variables)
    try:
        settings = settings_cls.model_validate(merged)
    except ValidationError as err:
        fields = settings_cls.model_fields
        invalid = frozenset(str(e["loc"][0]) for e in err.errors(include_url=False) if e["loc"])
        problems = [*file.unknown, *_problems_from(err, str(path), origin)]
        valid = {k: v for k, v in merged.items() if k in fields and k not in invalid}
        try:
            partial: Settings | None = settings_cls.model_validate(valid)
        except ValidationError:
            partial = None
        return Loaded(path, origin, tuple(problems), None, partial, invalid)
    if file.unknown:
        return Loaded(path, origin, tuple(file.unknown), None, settings, frozenset())
    return Loaded(path, origin, (), settings, settings, frozenset())


def load(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    settings_cls: type[Settings] = Settings,
) -> Settings:
    """The file and variables as Settings; raise ConfigError listing every problem. This checks
    the schema only: goalkeeper.validity.load_settings adds the checks across sections."""
    loaded = read(path, environ=environ, settings_cls=settings_cls)
    if loaded.settings is None:
        raise ConfigError(loaded.problems)
    return loaded.settings


def _variables(
    environ: Mapping[str, str], settings_cls: type[Settings]
) -> tuple[dict[Key, str], list[Problem]]:
    """Each GOALKEEPER_ variable's key, and the names pydantic-settings would pass over in
    silence: malformed, or naming no section."""
    origin: dict[Key, str] = {}
    problems: list[Problem] = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_PATH_VARIABLE:
            continue
        key = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        source = f"environment {name}"
        if not all(key):
            problems.append(Problem(source=source, key="", message="malformed name"))
        elif key[0] not in settings_cls.model_fields:
            problems.append(Problem(source=source, key=".".join(key), message="unknown key"))
        else:
            origin[key] = name
    return origin, problems


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _secrets_in_file(
    data: Mapping[str, Any], source: str, settings_cls: type[Settings]
) -> list[Problem]:
    problems = []
    for key in secret_keys(settings_cls):
        if _value_at(data, key) is not None:
            variable = ENV_PREFIX + key.upper().replace(".", "__")
            message = f"secrets may not be written in the file; set {variable}"
            problems.append(Problem(source=source, key=key, message=message))
    for key in password_url_keys(settings_cls):
        value = _value_at(data, key)
        url = database_url(value) if isinstance(value, str) else None
        if url is not None and url.password:
            variable = ENV_PREFIX + key.upper().replace(".", "__")
            message = f"holds a password; set {variable} instead"
            problems.append(Problem(source=source, key=key, message=message))
    return problems


def _value_at(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _source(loc: Key, origin: Mapping[Key, str], file: str) -> str:
    """The variable that set `loc` or a value inside it, or one set only below it (an unknown
    key `GOALKEEPER_FOO__BAR` is reported at `foo`); else the file."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in origin:
            return f"environment {origin[loc[:n]]}"
    below = sorted(name for key, name in origin.items() if key[: len(loc)] == loc)
    return f"environment {below[0]}" if below else file


def _problems_from(err: ValidationError, file: str, origin: Mapping[Key, str]) -> list[Problem]:
    problems = []
    for error in err.errors(include_url=False, include_input=False):
        loc = tuple(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(
            Problem(source=_source(loc, origin, file), key=key_path(loc), message=message)
        )
    return problems
