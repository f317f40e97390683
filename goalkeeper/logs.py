"""The one logging configuration: structlog for our events, the same renderer for library logs.

Logs go to stderr (stdout is kept for command output such as `scan --json`). Every event passes
through `Redactor`, which replaces configured secrets and anything shaped like a credential
(Telegram bot URLs, Authorization headers, passwords in URLs) before it is rendered. This module
never decides what to log; it only decides how.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"
_PATTERNS = (
    re.compile(r"(/bot)[0-9]+:[A-Za-z0-9_-]+"),  # Telegram token inside an API URL
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer|token|basic)?\s*)[^\s\"',}]+"),
    re.compile(r"(://[^/\s:@]*:)[^@\s/]+(@)"),  # password inside a URL
)


class Redactor:
    """A structlog processor that hides secrets in every string of an event, however nested."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for key, value in event.items():
            event[key] = self.scrub(value)
        return event

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub_text(f"{type(value).__name__}: {value}")
        return value

    def scrub_text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(
                lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex == 2 else ""), text
            )
        return text


REDACTOR = Redactor()


def _scrub_exception(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    if "exception" in event:
        event["exception"] = REDACTOR.scrub_text(str(event["exception"]))
    return event


def configure(
    *,
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up structlog and route the standard library's loggers through the same pipeline."""
    stream = stream or sys.stderr
    REDACTOR.update(secrets)
    json_output = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        REDACTOR,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # Tracebacks are rendered to text here, after the shared chain: scrub them once more.
    tail: list[Processor] = [structlog.processors.format_exc_info, _scrub_exception]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries speak at warning unless we debug: their info lines are noise for an operator.
    library_level = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("aiohttp", "apscheduler", "openstack", "keystoneauth", "urllib3", "asyncio"):
        logging.getLogger(name).setLevel(library_level)


def bind(**values: Any) -> None:
    """Bind context (tick id, ...) to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**values)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def first_line(message: object, *, limit: int = 300) -> str:
    """An outside library's message (an exception's text) cut to its first line: the rest (SQL,
    a response body, a traceback) belongs in no error line of ours."""
    lines = str(message).strip().splitlines()
    return lines[0][:limit] if lines else "(no message)"
