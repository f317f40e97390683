"""Test-only crash points: the crash-safety test kills the daemon here, at a point it names.

Inert in production: unless the environment variable `_GOALKEEPER_TEST_CRASH_AT` is set when
the process starts, `crash_point()` returns at once and does nothing. Set to `NAME` or `NAME:N`,
the process sends itself SIGKILL the N-th time (default 1) it reaches the point NAME:
`commit` (inside the tick's transaction, after its messages were written, before the commit),
`committed` (after the commit, before any message is handed on), `marked` (after a message
was marked sent). The leading underscore keeps it out of the `GOALKEEPER_` settings namespace.
"""

from __future__ import annotations

import os
import signal

CRASH_VARIABLE = "_GOALKEEPER_TEST_CRASH_AT"


def _plan(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    return name, int(count or "1")


_PLANNED = _plan(os.environ.get(CRASH_VARIABLE))
_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if the test asked for a crash at this point (see the docstring)."""
    if _PLANNED is None or _PLANNED[0] != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == _PLANNED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
