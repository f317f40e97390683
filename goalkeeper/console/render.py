"""The console's Jinja2 environment: autoescape on for every template, undefined names fail.

Every customer string (server and project names, owners, errors, a customer's exception reason)
reaches the page only through these templates, so escaping is never left to a caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


def render_page(name: str, **context: Any) -> str:
    return _environment.get_template(name).render(**context)
