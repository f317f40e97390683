"""Reading a YAML file an operator wrote, with bounds, so a bad file is an error and never a hang.

`open()` on a FIFO blocks until a writer comes, `/dev/zero` never ends, a 20 MB file or a
"billion laughs" of aliases eats memory, deep nesting overflows PyYAML's recursive composer, and
a date like 2020-13-45 raises ValueError from deep inside the constructor. Each of these becomes
`UnreadableFile` with a one-line reason (and the line, where there is one). Only regular files
are read, non-blocking and at most `max_bytes`. This module knows nothing of settings.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_DEPTH = 32  # settings nest four deep; the static inventory three
_CHUNK = 1 << 16


class UnreadableFile(Exception):
    """The file cannot be used; the message says why (never with the file's contents)."""


def read_yaml(path: Path, *, max_bytes: int, max_nodes: int) -> Any:
    """The parsed document (None when empty); raise UnreadableFile for any reason it is not."""
    data = _read_bounded(path, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        byte = data[err.start]
        raise UnreadableFile(f"line {line}: not UTF-8 text (byte 0x{byte:02x})") from None
    return parse_yaml(text, max_nodes=max_nodes)


def parse_yaml(text: str, *, max_nodes: int) -> Any:
    """Safe-load `text`, refusing documents nested deeper than MAX_DEPTH or whose aliases
    expand past `max_nodes` values; raise UnreadableFile saying where and why."""
    try:
        loader = _BoundedLoader(text)  # the reader refuses control characters already here
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node, max_nodes)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise UnreadableFile(f"{where}{err.problem or err.context or 'not valid YAML'}") from None
    except yaml.reader.ReaderError as err:
        raise UnreadableFile(f"character {err.position}: {err.reason}") from None
    except yaml.YAMLError as err:
        raise UnreadableFile(f"not valid YAML ({type(err).__name__})") from None


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    # O_NONBLOCK: opening a FIFO does not wait for a writer; fstat on the open descriptor then
    # refuses it, with no window in which the path could be swapped.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile("file not found") from None
    except OSError as err:
        raise UnreadableFile(f"cannot read: {err.strerror}") from None
    except ValueError:  # Python refuses a path with a NUL byte before the system sees it
        raise UnreadableFile("cannot read: the path holds a NUL character") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a folder"
                if stat.S_ISDIR(mode)
                else "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a socket"
                if stat.S_ISSOCK(mode)
                else "a device"
            )
            raise UnreadableFile(f"is {kind}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise UnreadableFile(f"cannot read: {err.strerror}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise UnreadableFile(f"is larger than {max_bytes // 1024} KiB")
    return b"".join(chunks)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's pure-Python safe loader with a depth limit while composing (its composer
    recurses once per level) and with constructor ValueErrors turned into marked errors."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as err:  # e.g. 2020-13-45, !!int x
            raise ConstructorError(None, None, f"invalid value: {err}", node.start_mark) from None


def _check_expansion(root: Node, max_nodes: int) -> None:
    """Count values as if every alias were copied out. PyYAML's safe_load shares one object per
    anchor, so nine aliases of nine aliases cost nothing to load and 10^9 values to validate,
    dump or print; the count is memoized per node, so it is cheap whatever the blow-up."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise ComposerError(None, None, "an alias refers to itself", node.start_mark)
        if depth > MAX_DEPTH:
            raise ComposerError(
                None, None, f"aliases nest deeper than {MAX_DEPTH} levels", node.start_mark
            )
        on_path.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child, depth + 1)
            if total > max_nodes:
                raise ComposerError(
                    None,
                    None,
                    f"holds more than {max_nodes} values (counting each alias as a copy)",
                    node.start_mark,
                )
        on_path.discard(key)
        sizes[key] = total
        return total

    size(root, 1)


def key_path(loc: Iterable[int | str]) -> str:
    """A validation error's location as the key an operator wrote: `targets[3].network`.

    A number is a list index, also as text (a location read back from an environment variable).
    """
    out = ""
    for part in loc:
        text = str(part)
        out += (
            f"[{text}]"
            if isinstance(part, int) or text.isdigit()
            else (f".{text}" if out else text)
        )
    return out
