"""Network namespaces the benchmark creates for itself, and always deletes again.

Each scenario runs in a fresh namespace named gk-bench-<pid>-<scenario>, holding nothing but its
own loopback: every probe and reply stays inside it, and nftables rules loaded there touch no
other network. The namespace is deleted when the block exits, however it exits (an exception,
Ctrl-C, or SIGTERM, which __main__ turns into SystemExit so this cleanup runs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

PREFIX = "gk-bench-"


def unavailable() -> str | None:
    """Why namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "not root: network namespaces, nftables and SYN scans need root"
    missing = [tool for tool in ("ip", "nft", "nmap") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)}" if missing else None


@contextmanager
def namespace(tag: str) -> Iterator[str]:
    name = f"{PREFIX}{os.getpid()}-{tag}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def inside(name: str) -> list[str]:
    """The argv prefix that runs a command inside namespace `name`."""
    return ["ip", "netns", "exec", name]
