"""How far a one-off run has got, for a person watching it at a terminal.

The scanner and the delivery report to a `Progress`: hosts to scan and scanned, messages to
send and settled. The daemon and every non-terminal run pass `SILENT`; `goalkeeper scan` and
`goalkeeper demo` on a terminal pass `terminal_bar()`, a rich progress display on stderr.
The only module that imports rich.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:  # rich loads only when a bar is shown: the short commands start faster
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


class Progress(Protocol):
    def hosts_planned(self, count: int) -> None:
        """`count` more hosts are to be scanned."""

    def hosts_scanned(self, count: int) -> None:
        """`count` more hosts are done (scanned, or given up on)."""

    def messages_queued(self, count: int) -> None:
        """`count` more messages are to be sent."""

    def message_settled(self, *, sent: bool) -> None:
        """One message is done: sent, or left pending or failed."""


class _Silent:
    def hosts_planned(self, count: int) -> None:
        pass

    def hosts_scanned(self, count: int) -> None:
        pass

    def messages_queued(self, count: int) -> None:
        pass

    def message_settled(self, *, sent: bool) -> None:
        pass


SILENT: Progress = _Silent()


class _Bar:
    """Two rich tasks, hosts and messages; a task shows only once it has work."""

    def __init__(self, progress: RichProgress) -> None:
        self._rich = progress
        self._hosts = progress.add_task("hosts scanned", total=0, visible=False)
        self._messages = progress.add_task("messages sent", total=0, visible=False)
        self._unsent = 0

    def hosts_planned(self, count: int) -> None:
        self._grow(self._hosts, count)

    def hosts_scanned(self, count: int) -> None:
        self._rich.advance(self._hosts, count)

    def messages_queued(self, count: int) -> None:
        self._grow(self._messages, count)

    def message_settled(self, *, sent: bool) -> None:
        if not sent:
            self._unsent += 1
            label = f"messages sent ({self._unsent} not sent)"
            self._rich.update(self._messages, description=label)
        self._rich.advance(self._messages, 1)

    def _grow(self, task: TaskID, count: int) -> None:
        total = self._rich.tasks[task].total or 0
        self._rich.update(task, total=total + count, visible=True)


@contextmanager
def terminal_bar(stream: TextIO) -> Iterator[Progress]:
    """A progress display on `stream` while the block runs, when it is a terminal; else SILENT.

    Log lines written to the stream meanwhile are printed above the bars, not through them."""
    if not stream.isatty():
        yield SILENT
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    console = Console(file=stream)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with RichProgress(
        *columns, TimeElapsedColumn(), console=console, redirect_stderr=True, transient=False
    ) as progress:
        # The log handler holds the stream itself: point it at rich's stand-in meanwhile, so
        # log lines are printed above the bars instead of through them.
        handlers = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logging.StreamHandler) and h.stream is stream
        ]
        for handler in handlers:
            handler.setStream(sys.stderr)
        try:
            yield _Bar(progress)
        finally:
            for handler in handlers:
                handler.setStream(stream)
