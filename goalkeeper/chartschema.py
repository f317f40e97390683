"""The chart's values.schema.json `config` part, generated from Settings so the two never drift.

Helm validates values against that schema on install, upgrade, template and lint, so a key the
daemon would refuse (a typo, `environment: production`, a /33, a secret written into the
ConfigMap) stops the release instead of a pod that crash-loops with exit 2. Settings is the one
source: this module only translates pydantic's JSON Schema into what Helm's validator checks.
Checks JSON Schema cannot say (a host part in a CIDR, a time zone, cross-key rules) stay with
`goalkeeper check-config`. A developer tool (`make chart-schema`): the product never imports it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from goalkeeper.config import ENV_PREFIX, Settings, password_url_keys, secret_keys

SCHEMA_PATH = Path("deploy/helm/goalkeeper/values.schema.json")

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
# RFC 3986 §3.2.2's IPv6address, row by row: n groups before "::", the rest after it.
_IPV6 = (
    "(?:"
    + "|".join(
        [
            rf"(?:{_H16}:){{6}}{_LS32}",
            rf"::(?:{_H16}:){{5}}{_LS32}",
            rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
            *(
                rf"(?:(?:{_H16}:){{0,{before}}}{_H16})?::{after}"
                for before, after in enumerate(
                    [
                        rf"(?:{_H16}:){{3}}{_LS32}",
                        rf"(?:{_H16}:){{2}}{_LS32}",
                        rf"{_H16}:{_LS32}",
                        _LS32,
                        _H16,
                        "",
                    ],
                    start=1,
                )
            ),
        ]
    )
    + ")"
)
_PREFIX4 = r"(?:3[0-2]|[12]?[0-9])"
_PREFIX6 = r"(?:12[0-8]|1[01][0-9]|[1-9]?[0-9])"
# What ipaddress.ip_network reads: an address alone, or with a prefix length (IPv4 also takes a
# dotted netmask). Scope ids (fe80::1%eth0) only for addresses: link-local is never scanned.
PATTERNS = {
    "ipv4network": rf"^{_IPV4}(?:/(?:{_PREFIX4}|{_IPV4}))?$",
    "ipv6network": rf"^{_IPV6}(?:/{_PREFIX6})?$",
    "ipv4": rf"^{_IPV4}$",
    "ipv6": rf"^{_IPV6}(?:%[^%/]+)?$",
}
# SQLAlchemy's own URL grammar (sqlalchemy.engine.url._parse_url): a non-empty password sits
# between the user's ":" and the first "@".
_URL_WITH_PASSWORD = r"^[A-Za-z0-9_+]+://[^:/]*:[^@]+@"  # noqa: S105 - a pattern, not a password
_NOISE = ("title", "default", "format", "writeOnly")
_WIDTH = 100


def config_schema() -> dict[str, Any]:
    """Settings as the JSON Schema of the chart's `config` value (Helm's dialect: no $ref)."""
    generated = Settings.model_json_schema()
    schema: dict[str, Any] = _translated(generated, generated.get("$defs", {}))
    schema.pop("$defs", None)
    for key in secret_keys():
        variable = ENV_PREFIX + key.upper().replace(".", "__")
        _set_at(
            schema,
            key,
            {
                "type": "null",
                "description": f"A secret: never in the ConfigMap. The pod gets {variable} "
                "from a Kubernetes Secret (secrets.existingSecret or secrets.values).",
            },
        )
    for key in password_url_keys():
        variable = ENV_PREFIX + key.upper().replace(".", "__")
        leaf = _at(schema, key)
        leaf["not"] = {"pattern": _URL_WITH_PASSWORD}
        leaf["description"] = (
            f"No password here: a URL with one comes from a Secret as {variable} "
            "(secrets.values.stateUrl or state-url in secrets.existingSecret)."
        )
    schema["description"] = (
        "goalkeeper's config.yaml, generated from goalkeeper.config.Settings by "
        "`make chart-schema`: do not edit by hand."
    )
    return schema


def values_schema(current: dict[str, Any]) -> dict[str, Any]:
    """The chart's whole schema: its own keys as written by hand, `config` generated."""
    schema = dict(current)
    schema["properties"] = dict(current["properties"]) | {"config": config_schema()}
    return schema


def render(schema: dict[str, Any]) -> str:
    """The file's text: a value that fits on one line is kept on one, as the chart's own keys
    were written by hand, so the file reads (and diffs) like a schema rather than a dump."""
    return _compact(schema, "") + "\n"


def _compact(node: Any, indent: str) -> str:
    flat = json.dumps(node, ensure_ascii=False, separators=(", ", ": "))
    if len(indent) + len(flat) <= _WIDTH or not isinstance(node, dict | list) or not node:
        return flat
    inner = indent + "  "
    if isinstance(node, list):
        items = [inner + _compact(item, inner) for item in node]
    else:
        items = [
            f"{inner}{json.dumps(key)}: {_compact(value, inner)}" for key, value in node.items()
        ]
    brackets = "[]" if isinstance(node, list) else "{}"
    return brackets[0] + "\n" + ",\n".join(items) + "\n" + indent + brackets[1]


def _translated(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_translated(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _translated(defs[node["$ref"].removeprefix("#/$defs/")], defs)
    result = {k: _translated(v, defs) for k, v in node.items() if k not in _NOISE}
    if "properties" in node:  # field names, not keywords: a field may be called "format"
        result["properties"] = {k: _translated(v, defs) for k, v in node["properties"].items()}
    if isinstance(node.get("format"), str) and node["format"] in PATTERNS:
        result["pattern"] = PATTERNS[node["format"]]
    return result


def _at(schema: dict[str, Any], key: str) -> dict[str, Any]:
    node = schema
    for part in key.split("."):
        child: dict[str, Any] = node["properties"][part]
        node = child
    return node


def _set_at(schema: dict[str, Any], key: str, value: dict[str, Any]) -> None:
    *parents, leaf = key.split(".")
    node = _at(schema, ".".join(parents)) if parents else schema
    node["properties"][leaf] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m goalkeeper.chartschema",
        description="Write the chart's values.schema.json with `config` generated from Settings.",
    )
    parser.add_argument("path", nargs="?", type=Path, default=SCHEMA_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    wanted = render(values_schema(json.loads(text)))
    if args.check:
        if text != wanted:
            print(f"{args.path} is stale: run `make chart-schema`", file=sys.stderr)
            return 1
        return 0
    if text != wanted:
        args.path.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
