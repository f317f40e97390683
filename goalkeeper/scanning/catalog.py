"""The dangerous-port catalog: the default port list and the advice each customer reads.

The catalog is package data (catalog.yaml next to this module), read once through
importlib.resources and checked as a whole: every problem in the file is reported together, so
a broken catalog fails at start-up or in CI, never halfway through writing a customer's mail.
This module only reads its own package data; it never reads config files, scans or sends.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

import yaml

from goalkeeper.model import PortSpec, ServiceAdvice, Transport
from goalkeeper.scanning.grading import SCRIPT_RULES, ServiceCheck

CATALOG_PACKAGE = "goalkeeper.scanning"
CATALOG_RESOURCE = "catalog.yaml"
_PORT = re.compile(r"^(\d{1,5})/(tcp|udp)$")
_SERVICE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")  # the same names config.PortEntry accepts
_TEXT_FIELDS = ("title", "exposed", "risk")


class CatalogError(ValueError):
    """The catalog file is invalid; the message lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"{source}: " + "; ".join(problems))


class Catalog:
    """The known dangerous ports, sorted, and the advice for each service."""

    def __init__(
        self,
        ports: tuple[PortSpec, ...],
        advice: Mapping[str, ServiceAdvice],
        *,
        fallback: ServiceAdvice,
        checks: Mapping[str, ServiceCheck] | None = None,
    ) -> None:
        self._checks = MappingProxyType(dict(checks or {}))
        self._ports = tuple(sorted(ports))
        self._advice = MappingProxyType(dict(advice))
        self._fallback = fallback

    @property
    def ports(self) -> tuple[PortSpec, ...]:
        return self._ports

    @property
    def advice(self) -> Mapping[str, ServiceAdvice]:
        return self._advice

    @property
    def checks(self) -> Mapping[str, ServiceCheck]:
        return self._checks

    def check_for(self, service: str) -> ServiceCheck:
        """How to verify `service`; -sV alone, by its name, for a service only a config knows."""
        known = self._checks.get(service)
        if known is not None:
            return known
        return ServiceCheck(label=service, expect=re.escape(service), note="not in the catalog")

    def advice_for(self, service: str) -> ServiceAdvice:
        """The advice for `service`; generic words for a service only a config knows."""
        known = self._advice.get(service)
        if known is not None:
            return known
        fallback = self._fallback
        return ServiceAdvice(
            service=service,
            title=_fill(fallback.title, service),
            exposed=_fill(fallback.exposed, service),
            risk=_fill(fallback.risk, service),
            fix=tuple(_fill(step, service) for step in fallback.fix),
        )


@functools.cache
def load_catalog() -> Catalog:
    """The catalog shipped with the package, read and checked once per process."""
    text = resources.files(CATALOG_PACKAGE).joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    return parse_catalog(text, source=f"{CATALOG_PACKAGE}/{CATALOG_RESOURCE}")


def parse_catalog(text: str, *, source: str) -> Catalog:
    """Build a Catalog from YAML text; raise CatalogError naming every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CatalogError(source, [f"not valid YAML: {err}"]) from None
    if not isinstance(data, dict):
        raise CatalogError(source, ["the top level must be a mapping"])
    problems: list[str] = []
    unknown = sorted(set(data) - {"fallback", "services"})
    if unknown:
        problems.append(f"unknown top-level keys: {', '.join(map(str, unknown))}")
    fallback = _advice("fallback", data.get("fallback"), problems, where="fallback")
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        problems.append("services: must be a non-empty mapping of service name to advice")
        services = {}
    ports, advice = _services(services, problems)
    checks = {
        name: check
        for name, entry in services.items()
        if isinstance(entry, dict)
        and (check := _check(str(name), entry.get("verify"), problems)) is not None
    }
    if problems or fallback is None:
        raise CatalogError(source, problems)
    labelled = {
        name: dataclasses.replace(item, label=checks[name].label) if name in checks else item
        for name, item in advice.items()
    }
    return Catalog(tuple(ports), labelled, fallback=fallback, checks=checks)


_CHECK_KEYS = {"label", "expect", "scripts", "auth_markers", "refused", "note"}


def _check(name: str, entry: object, problems: list[str]) -> ServiceCheck | None:
    """A service's `verify` entry; every problem in it is added to `problems`."""
    where = f"services.{name}.verify"
    if entry is None:  # graded by -sV alone, under the service's own name (check_for)
        return None
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be a mapping with label, expect, scripts")
        return None
    found = len(problems)
    unknown = sorted(set(map(str, entry)) - _CHECK_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys: {', '.join(unknown)}")
    texts = _check_texts(entry, problems, where=where)
    lists = _check_lists(entry, problems, where=where)
    for script in lists["scripts"]:
        if script not in SCRIPT_RULES:
            problems.append(f"{where}.scripts: {script!r} has no rule in scanning/grading.py")
    if not lists["scripts"] and not texts.get("note"):
        problems.append(f"{where}.note: say why no script runs (graded by -sV alone)")
    if len(problems) > found:
        return None
    return ServiceCheck(
        label=texts["label"],
        expect=texts["expect"],
        refused=texts.get("refused", ""),
        note=texts.get("note", ""),
        scripts=lists["scripts"],
        auth_markers=lists["auth_markers"],
    )


def _check_texts(
    entry: Mapping[object, object], problems: list[str], *, where: str
) -> dict[str, str]:
    texts: dict[str, str] = {}
    for key in ("label", "expect", "refused", "note"):
        value = entry.get(key, "")
        required = key in ("label", "expect")
        if not isinstance(value, str) or (required and not value.strip()):
            problems.append(f"{where}.{key}: must be {'non-empty ' if required else ''}text")
        else:
            texts[key] = " ".join(value.split())
    try:
        re.compile(texts.get("expect", ""))
    except re.error as err:
        problems.append(f"{where}.expect: not a regular expression ({err})")
    return texts


def _check_lists(
    entry: Mapping[object, object], problems: list[str], *, where: str
) -> dict[str, tuple[str, ...]]:
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("scripts", "auth_markers"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problems.append(f"{where}.{key}: must be a list of names")
            value = []
        lists[key] = tuple(value)
    return lists


def _services(
    services: Mapping[object, object], problems: list[str]
) -> tuple[list[PortSpec], dict[str, ServiceAdvice]]:
    """Each service's ports and advice; a port listed under two services is a problem."""
    owners: dict[tuple[int, Transport], str] = {}
    ports: list[PortSpec] = []
    advice: dict[str, ServiceAdvice] = {}
    for name, entry in services.items():
        where = f"services.{name}"
        if not isinstance(name, str) or not _SERVICE.match(name):
            problems.append(f"{where}: not a valid service name")
            continue
        item = _advice(name, entry, problems, where=where)
        if item is not None:
            advice[name] = item
        for port, protocol in _ports(entry, problems, where=where):
            owner = owners.get((port, protocol))
            if owner is not None:
                problems.append(f"{where}: {port}/{protocol} is already listed under {owner}")
                continue
            owners[(port, protocol)] = name
            ports.append(PortSpec(port=port, protocol=protocol, service=name))
    return ports, advice


def _advice(name: str, entry: object, problems: list[str], *, where: str) -> ServiceAdvice | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be a mapping with title, exposed, risk and fix")
        return None
    unknown = sorted(set(entry) - {*_TEXT_FIELDS, "fix", "ports", "verify"})
    if unknown:
        problems.append(f"{where}: unknown keys: {', '.join(map(str, unknown))}")
    texts: dict[str, str] = {}
    for key in _TEXT_FIELDS:
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{where}.{key}: must be non-empty text")
        else:
            texts[key] = " ".join(value.split())
    fix = entry.get("fix")
    steps: list[str] = []
    if not isinstance(fix, list) or not fix:
        problems.append(f"{where}.fix: must be a non-empty list of steps")
    else:
        for index, step in enumerate(fix):
            if not isinstance(step, str) or not step.strip():
                problems.append(f"{where}.fix[{index}]: must be non-empty text")
            else:
                steps.append(" ".join(step.split()))
    if len(texts) != len(_TEXT_FIELDS) or len(steps) != len(fix or ()):
        return None
    return ServiceAdvice(service=name, fix=tuple(steps), **texts)


def _ports(entry: object, problems: list[str], *, where: str) -> list[tuple[int, Transport]]:
    raw = entry.get("ports") if isinstance(entry, dict) else None
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}.ports: must be a non-empty list like [6379/tcp]")
        return []
    found: list[tuple[int, Transport]] = []
    for index, item in enumerate(raw):
        match = _PORT.match(str(item))
        if match is None or not 1 <= int(match[1]) <= 65535:
            problems.append(f"{where}.ports[{index}]: {item!r} is not PORT/tcp or PORT/udp")
            continue
        found.append((int(match[1]), Transport(match[2])))
    return found


def _fill(text: str, service: str) -> str:
    return text.replace("{service}", service)
