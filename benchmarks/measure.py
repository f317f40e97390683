"""How one benchmark run is measured: wall time, CPU (children included), peak memory, accuracy.

A plain nmap reference is started here and reaped with os.wait4, which gives that one process's
own CPU time. A Goalkeeper run happens in a fresh Python child (benchmarks.goalkeeper_run) that
measures itself, so its peak RSS is the daemon's and not this harness's. nmap's peak RSS is
sampled from /proc (VmHWM) while it runs: the kernel's ru_maxrss of a child also counts the
memory of the Python parent it was forked from, before exec. Nothing here opens a socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
# What the image's ENV sets for the daemon's process (a test holds the two equal): Goalkeeper's
# runs are measured as they run in production.
IMAGE_ENVIRONMENT = {"MALLOC_ARENA_MAX": "2"}
Port = tuple[str, int]  # (address, TCP port)


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run. RSS in MiB; `python_rss` is None for a plain nmap."""

    label: str
    wall: float
    cpu: float  # user + system, the process and its children
    nmap_rss: float  # the largest nmap process
    python_rss: float | None
    misses: int
    false_positives: int
    lost_packets: int = 0  # kernel drop counters moved during the run
    notes: dict[str, Any] = field(default_factory=dict)


def accuracy(found: Iterable[Port], truth: set[Port]) -> tuple[int, int]:
    """(misses, false positives) of `found` against the listeners that were really open."""
    seen = set(found)
    return len(truth - seen), len(seen - truth)


def open_ports_in_xml(path: Path) -> set[Port]:
    """Every open TCP port in an nmap XML file, read as a stream (the default run's is large)."""
    found: set[Port] = set()
    address = ""
    for _, element in ElementTree.iterparse(path, events=("end",)):  # noqa: S314 - nmap's own
        if element.tag == "address" and element.get("addrtype") == "ipv4":
            address = element.get("addr", "")
        elif element.tag == "port":
            state = element.find("state")
            if state is not None and state.get("state") == "open":
                found.add((address, int(element.get("portid", "0"))))
        elif element.tag == "host":
            element.clear()
    return found


def kernel_drops(namespace_local: bool) -> int:
    """Packets the kernel dropped on receive: the per-CPU backlog (whole machine) and, inside
    our namespace, SYNs a full listen queue refused. A miss with these unmoved is the scanner's."""
    total = 0
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        total += int(line.split()[1], 16)
    if namespace_local:
        for name in ("ListenDrops", "ListenOverflows"):
            total += _netstat("TcpExt", name)
    return total


def _netstat(group: str, name: str) -> int:
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    for header, values in zip(lines[::2], lines[1::2], strict=True):
        if header[0] == f"{group}:" and name in header:
            return int(values[header.index(name)])
    return 0


class NmapPeak:
    """The largest VmHWM of `parent` (when it is nmap) or of its nmap children, sampled every
    20 ms on a thread (a context manager); `mib` is read after the block. Only the parent's
    own children are read (/proc/PID/task/*/children), so sampling costs next to nothing."""

    def __init__(self, parent: int) -> None:
        self._parent = parent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="nmap-rss", daemon=True)
        self.mib = 0.0

    def __enter__(self) -> NmapPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for pid in [self._parent, *self._children()]:
                self.mib = max(self.mib, _nmap_peak(pid))

    def _children(self) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{self._parent}/task").glob("*/children"):
            try:
                found += [int(pid) for pid in task.read_text().split()]
            except OSError:
                continue
        return found


def _nmap_peak(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("Name", "").strip() != "nmap":
        return 0.0
    return int(fields.get("VmHWM", "0 kB").split()[0]) / 1024


def run_nmap(
    label: str, argv: Sequence[str], truth: set[Port], scratch: Path, *, namespace_local: bool
) -> Run:
    """One plain nmap process, its XML to a file (read after the clock stops)."""
    out = scratch / f"{label.replace(' ', '-')}.xml"
    before = kernel_drops(namespace_local)
    started = time.perf_counter()
    process = subprocess.Popen(
        [*argv, "-oX", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    with NmapPeak(process.pid) as peak:
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    errors = process.stderr.read().decode() if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode != 0:
        raise RuntimeError(f"{label}: nmap exited {process.returncode}: {errors[-500:]}")
    misses, false_positives = accuracy(open_ports_in_xml(out), truth)
    out.unlink()
    return Run(
        label=label,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        nmap_rss=peak.mib,
        python_rss=None,
        misses=misses,
        false_positives=false_positives,
        lost_packets=kernel_drops(namespace_local) - before,
    )


def run_goalkeeper(
    label: str, mode: str, job: dict[str, Any], truth: set[Port], scratch: Path,
    *, namespace_local: bool,
) -> Run:  # fmt: skip
    """One Goalkeeper run (`scan` or `tick`) in a fresh interpreter; see goalkeeper_run."""
    job_file = scratch / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    before = kernel_drops(namespace_local)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.goalkeeper_run", mode, str(job_file)],
        cwd=REPOSITORY,
        env={**os.environ, **IMAGE_ENVIRONMENT},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{label}: the Goalkeeper run failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    found = [(address, port) for address, port in report.pop("found")]
    misses, false_positives = accuracy(found, truth)
    return Run(
        label=label,
        wall=report.pop("wall"),
        cpu=report.pop("cpu"),
        nmap_rss=report.pop("nmap_rss"),
        python_rss=report.pop("python_rss"),
        misses=misses,
        false_positives=false_positives,
        lost_packets=kernel_drops(namespace_local) - before,
        notes=report,
    )
