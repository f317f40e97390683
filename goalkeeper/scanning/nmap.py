"""The nmap scanner: runs nmap over a scan plan and says honestly what was and was not scanned.

The only module that starts nmap or imports python-nmap. nmap runs as an asyncio subprocess we
can kill (python-nmap's own scan() hides its Popen), dies with this process, and gets no secret
in its environment. python-nmap's parse hides failures (a host cut off by --host-timeout looks
clean), so the raw XML and stderr are read too: such hosts are reported as not scanned, never as
clean. It scans what it is handed at the planner's pace (scope is the pipeline's job, less what
scope.unscannable refuses) and knows nothing of owners or findings.
Past 300 lines: the run, its kill and the reading of XML and stderr are one contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import os
import re
import shlex
import shutil
import signal
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

import nmap
import structlog

from goalkeeper.aio import Closing
from goalkeeper.config import ScanSettings
from goalkeeper.model import UDP_SKIPPED, IPAddress, OpenPort, PortSpec, ScanResult, Transport
from goalkeeper.progress import SILENT, Progress
from goalkeeper.scanning.planner import Batch, Pace, plan_pace, plan_scan
from goalkeeper.scope import unscannable

log = structlog.get_logger(__name__)

HOST_TIMEOUT_REASON = "nmap host timeout"
ARGV_TARGETS_MAX = 16  # larger batches reach nmap on stdin (-iL -), away from argv limits and ps
_ATTEMPTS = 2  # a failed batch is retried once
_WARNING = re.compile(r"^warning:", re.IGNORECASE)  # python-nmap's own split of nmap's stderr
_TOKEN = re.compile(r"[0-9A-Fa-f:.]+")
_MAX_REASON = 200
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True)
# nmap writes a <taskprogress percent=...> line into its XML every STATS_EVERY; a batch's
# progress is logged at most every PROGRESS_LOG_SECONDS (and shown on a terminal at each line).
STATS_EVERY = "2s"
PROGRESS_LOG_SECONDS = 10.0
_LINE_LIMIT = 1 << 24  # stdout is read line by line; no XML line of nmap's comes near this
_TASK_PROGRESS = re.compile(rb'^<taskprogress task="([^"]*)" .*?percent="([0-9.]+)"')


class ScannerSetupError(Exception):
    """The scanner cannot work as configured: nmap missing, or raw scans without root."""


class _BatchFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason[:_MAX_REASON]


@dataclass(frozen=True, slots=True)
class _Probe:
    """What every nmap run of one scan looks for, and how."""

    scan_types: tuple[str, ...]
    tcp: frozenset[int]
    udp: frozenset[int]

    @property
    def port_argument(self) -> str:
        groups = [f"T:{','.join(map(str, sorted(self.tcp)))}"] if self.tcp else []
        groups += [f"U:{','.join(map(str, sorted(self.udp)))}"] if self.udp else []
        return ",".join(groups)


@dataclass(frozen=True, slots=True)
class _Outcome:
    scanned: frozenset[IPAddress] = frozenset()
    open_ports: tuple[OpenPort, ...] = ()
    not_scanned: Mapping[IPAddress, str] = field(default_factory=dict)
    failed: bool = False
    runs: int = 0


class NmapScanner(Closing):
    """The `Scanner` of model.py, backed by nmap. Use as an async context manager, or aclose()."""

    def __init__(
        self, settings: ScanSettings, *, nmap_path: str = "nmap", progress: Progress = SILENT
    ) -> None:
        try:
            arguments = tuple(shlex.split(settings.nmap_arguments))
        except ValueError as err:
            raise ScannerSetupError(f"scan.nmap_arguments cannot be split: {err}") from None
        if shutil.which(nmap_path) is None:
            raise ScannerSetupError(f"nmap not found: {nmap_path!r} is not an executable")
        if settings.privileged and os.geteuid() != 0 and "--privileged" not in arguments:
            raise ScannerSetupError(
                "scan.privileged is true, but SYN and UDP scans (-sS/-sU) need raw sockets: run "
                f"as root with NET_RAW (this process runs as uid {os.geteuid()}), or set "
                "scan.privileged: false for a TCP connect scan without UDP"
            )
        self._settings = settings
        self._nmap_path = nmap_path
        self._progress = progress
        # -Pn always: customer servers often drop ping, and under --open a host that discovery
        # calls down is left out of the XML exactly like a clean one. -n always: a reverse DNS
        # lookup per target is traffic to resolvers outside scope, and tells them what we scan.
        self._arguments = (*arguments, *(flag for flag in ("-Pn", "-n") if flag not in arguments))
        # A connect scan (-sT) captures nothing, so its runs cannot disturb each other; raw
        # runs each need a source address of their own, one family's addresses for its batches.
        self._sources: dict[int, asyncio.Queue[IPAddress | None]] | None = None
        capture_slots = None
        if settings.privileged:
            self._sources = {}
            for version in (4, 6):
                pool: list[IPAddress | None] = [
                    a for a in settings.source_addresses if a.version == version
                ] or [None]
                self._sources[version] = asyncio.Queue()
                for source in pool:
                    self._sources[version].put_nowait(source)
            capture_slots = max(1, len(settings.source_addresses))
        self._capture_slots = capture_slots
        self.pace: Pace = plan_pace(
            max_rate=settings.max_rate,
            max_rate_per_subnet=settings.max_rate_per_subnet,
            max_concurrent_scans=settings.max_concurrent_scans,
            max_concurrent_per_subnet=settings.max_concurrent_per_subnet,
            capture_slots=capture_slots,
        )
        self._slots = asyncio.Semaphore(self.pace.runs)
        # python-nmap's parse is blocking and CPU-bound (a whole-document DOM): it runs in these
        # threads so the event loop keeps serving probes while a large batch is read.
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_concurrent_scans, thread_name_prefix="goalkeeper-nmap"
        )
        self._closed = False

    async def aclose(self) -> None:
        """Stop the parsing threads; a parse in progress finishes first (threads are never
        orphaned)."""
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def scan(self, addresses: Sequence[IPAddress], ports: Sequence[PortSpec]) -> ScanResult:
        if self._closed:
            raise RuntimeError("the scanner is closed")
        probe, warnings = self._probe(ports)
        # The pipeline never hands these over (scope.select_targets); a second look costs nothing.
        never = {
            a: why
            for a in addresses
            if (why := unscannable(a, loopback=self._settings.allow_loopback)) is not None
        }
        if never:
            log.error("nmap.unscannable_targets", addresses=sorted(map(str, never)))
            addresses = [a for a in addresses if a not in never]
        # Told to the lifecycle: a host scanned without these says nothing about them.
        skipped: dict[tuple[int, Transport], str] = {}
        if not self._settings.privileged:
            udp = (p for p in ports if p.protocol is Transport.UDP)
            skipped = {(p.port, p.protocol): UDP_SKIPPED for p in udp}
        plan = plan_scan(
            addresses,
            subnet_prefix=self._settings.subnet_prefix,
            subnet_prefix_v6=self._settings.subnet_prefix_v6,
            batch_size=self._settings.batch_size,
            runs=self.pace.runs,
        )
        if probe is None:
            reason = "no ports to scan" + (" (UDP needs scan.privileged: true)" if ports else "")
            return ScanResult(
                scanned=frozenset(),
                open_ports=(),
                not_scanned=dict.fromkeys(plan.addresses, reason) | never,
                skipped=skipped,
                warnings=warnings,
            )
        pace = self.pace_for(len(plan.batches))
        self._progress.hosts_planned(len(plan.addresses))
        per_subnet = {subnet: asyncio.Semaphore(pace.per_subnet) for subnet in plan.subnets}
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    self._run_batch(batch, probe, pace, [per_subnet[s] for s in batch.subnets]),
                    name=f"nmap-batch-{batch.index}",
                )
                for batch in plan.batches
            ]
        outcomes = [task.result() for task in tasks]
        result = ScanResult(
            scanned=frozenset(chain.from_iterable(o.scanned for o in outcomes)),
            open_ports=tuple(
                sorted(
                    chain.from_iterable(o.open_ports for o in outcomes),
                    key=lambda p: (p.address.version, int(p.address), p.port, p.protocol),
                )
            ),
            not_scanned={a: why for o in outcomes for a, why in o.not_scanned.items()} | never,
            failed_batches=sum(o.failed for o in outcomes),
            nmap_runs=sum(o.runs for o in outcomes),
            skipped=skipped,
            warnings=warnings,
        )
        log.info(
            "nmap.scan",
            hosts=len(plan.addresses),
            batches=len(plan.batches),
            scanned=len(result.scanned),
            open_ports=len(result.open_ports),
            not_scanned=len(result.not_scanned),
            failed_batches=result.failed_batches,
            nmap_runs=result.nmap_runs,
            runs_at_once=pace.runs,
            max_rate_per_run=max((pace.rates(b)[0] for b in plan.batches), default=0),
        )
        return result

    def pace_for(self, batches: int) -> Pace:
        """The pace of a scan of `batches` nmap runs. With fewer runs than may go at once, the
        ceilings are shared among the runs there are: a small scan is not held to a quarter of
        them for runs that never start."""
        if batches >= self.pace.runs:
            return self.pace
        return plan_pace(
            max_rate=self._settings.max_rate,
            max_rate_per_subnet=self._settings.max_rate_per_subnet,
            max_concurrent_scans=max(1, batches),
            max_concurrent_per_subnet=self._settings.max_concurrent_per_subnet,
            capture_slots=self._capture_slots,
        )

    def _probe(self, ports: Sequence[PortSpec]) -> tuple[_Probe | None, tuple[str, ...]]:
        tcp = frozenset(p.port for p in ports if p.protocol is Transport.TCP)
        udp = frozenset(p.port for p in ports if p.protocol is Transport.UDP)
        warnings: tuple[str, ...] = ()
        if self._settings.privileged:
            scan_types = (*(("-sS",) if tcp else ()), *(("-sU",) if udp else ()))
        else:
            scan_types = ("-sT",)
            if udp:
                skipped = ", ".join(f"{port}/udp" for port in sorted(udp))
                warnings = (
                    f"scan.privileged is false: UDP ports not scanned ({skipped}); a UDP scan "
                    "needs raw sockets (root or NET_RAW)",
                )
                log.warning("nmap.udp_skipped", ports=skipped)
                udp = frozenset()
        if not tcp and not udp:
            return None, warnings
        return _Probe(scan_types=scan_types, tcp=tcp, udp=udp), warnings

    async def _run_batch(
        self, batch: Batch, probe: _Probe, pace: Pace, subnet_slots: Sequence[asyncio.Semaphore]
    ) -> _Outcome:
        batch_log = log.bind(
            batch=batch.index,
            subnets=f"{batch.subnets[0]}..{batch.subnets[-1]}",
            hosts=len(batch.addresses),
            max_rate=pace.rates(batch)[0],
        )
        watch = _BatchWatch(batch, batch_log, self._progress)
        try:
            return await self._attempts(batch, probe, pace, subnet_slots, batch_log, watch)
        finally:
            watch.finished()

    async def _attempts(
        self,
        batch: Batch,
        probe: _Probe,
        pace: Pace,
        subnet_slots: Sequence[asyncio.Semaphore],
        batch_log: structlog.stdlib.BoundLogger,
        watch: _BatchWatch,
    ) -> _Outcome:
        reason = ""
        for attempt in range(1, _ATTEMPTS + 1):
            # Subnet slots first (in plan order, so batches never wait on each other in a
            # circle): a batch waiting for its subnets must not hold a global slot meanwhile.
            async with contextlib.AsyncExitStack() as held:
                for slot in subnet_slots:
                    await held.enter_async_context(slot)
                await held.enter_async_context(self._slots)
                source = await self._take_source(batch, held)
                try:
                    outcome = await self._run_nmap(batch, probe, pace, source, watch)
                except _BatchFailed as failure:
                    reason = failure.reason
                    batch_log.debug("nmap.batch_attempt_failed", attempt=attempt, reason=reason)
                    continue
                except Exception as err:  # a scanner bug costs this batch, never the whole scan
                    reason = f"scanner error: {type(err).__name__}: {err}"[:_MAX_REASON]
                    batch_log.exception("nmap.batch_error", attempt=attempt)
                    continue
            batch_log.info(
                "nmap.batch",
                attempt=attempt,
                scanned=len(outcome.scanned),
                open_ports=len(outcome.open_ports),
                not_scanned=len(outcome.not_scanned),
            )
            return replace(outcome, runs=attempt)
        batch_log.warning("nmap.batch_failed", attempts=_ATTEMPTS, reason=reason)
        return _Outcome(
            not_scanned=dict.fromkeys(batch.addresses, reason), failed=True, runs=_ATTEMPTS
        )

    async def _take_source(self, batch: Batch, held: contextlib.AsyncExitStack) -> IPAddress | None:
        """A source address for one raw run, given back when `held` closes; None: the default."""
        if self._sources is None:
            return None
        pool = self._sources[batch.version]
        source = await pool.get()
        held.callback(pool.put_nowait, source)
        return source

    def _argv(self, batch: Batch, probe: _Probe, pace: Pace, source: IPAddress | None) -> list[str]:
        hosts = str(len(batch.addresses))
        argv = [self._nmap_path, *self._arguments, "--open", "-oX", "-", *probe.scan_types]
        argv += ["-p", probe.port_argument, *(("-6",) if batch.version == 6 else ())]
        # The whole batch is one host group: nmap pays its fixed price once per group.
        argv += ["--min-hostgroup", hosts, "--max-hostgroup", hosts]
        # Rates by the batch's subnets (Pace.rates): a run over several subnets may use more of
        # the budget, because randomised host order spreads its probes over them.
        max_rate, min_rate = pace.rates(batch)
        argv += ["--max-rate", str(max_rate), "--min-rate", str(min_rate), "--randomize-hosts"]
        argv += ["--stats-every", STATS_EVERY]
        if source is not None:
            argv += ["-S", str(source)]
            if source.is_loopback and "-e" not in self._arguments:
                argv += ["-e", "lo"]  # nmap cannot work out the interface of a loopback source
        return argv

    async def _run_nmap(
        self,
        batch: Batch,
        probe: _Probe,
        pace: Pace,
        source: IPAddress | None,
        watch: _BatchWatch,
    ) -> _Outcome:
        argv, stdin = with_targets(self._argv(batch, probe, pace, source), batch.addresses)
        try:
            process = await start_nmap(argv, stdin=stdin)
        except OSError as err:
            raise _BatchFailed(f"nmap could not start: {err.strerror or err}") from None
        try:
            stdout, stderr = await _communicate(process, stdin, watch.line)
        finally:
            await reap(process)
        errors = stderr.decode("utf-8", "replace").splitlines()
        if process.returncode != 0:
            raise _BatchFailed(_exit_reason(process.returncode, errors))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _judge_run, stdout, errors, batch, probe)


class _BatchWatch:
    """Follows one batch's nmap runs through their <taskprogress> lines: tells `progress` how
    many of its hosts are done (never going back, across a retry) and logs it now and then."""

    def __init__(self, batch: Batch, batch_log: Any, progress: Progress) -> None:
        self._hosts = len(batch.addresses)
        self._log = batch_log
        self._progress = progress
        self._told = 0
        self._logged_at = asyncio.get_running_loop().time()

    def line(self, line: bytes) -> None:
        match = _TASK_PROGRESS.match(line)
        if match is None:
            return
        percent = min(100.0, float(match[2]))
        self._tell(int(self._hosts * percent / 100))
        now = asyncio.get_running_loop().time()
        if now - self._logged_at >= PROGRESS_LOG_SECONDS:
            self._logged_at = now
            task = match[1].decode("ascii", "replace")
            self._log.info("nmap.progress", task=task, percent=round(percent, 1))

    def finished(self) -> None:
        self._tell(self._hosts)

    def _tell(self, done: int) -> None:
        if done > self._told:
            self._progress.hosts_scanned(done - self._told)
            self._told = done


async def _communicate(
    process: asyncio.subprocess.Process, stdin: bytes | None, on_line: Callable[[bytes], None]
) -> tuple[bytes, bytes]:
    """process.communicate(stdin), handing each line of stdout to `on_line` as it comes."""
    assert process.stdout is not None and process.stderr is not None

    async def feed() -> None:
        if stdin is None or process.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # nmap ended early
            process.stdin.write(stdin)
            await process.stdin.drain()
        process.stdin.close()

    async def read_stdout(stream: asyncio.StreamReader) -> bytes:
        lines = []
        while line := await stream.readline():
            lines.append(line)
            on_line(line)
        return b"".join(lines)

    _, stdout, stderr = await asyncio.gather(
        feed(), read_stdout(process.stdout), process.stderr.read()
    )
    await process.wait()
    return stdout, stderr


async def start_nmap(argv: list[str], *, stdin: bytes | None) -> asyncio.subprocess.Process:
    """nmap as a child we can kill: piped output (read line by line, up to _LINE_LIMIT), only
    PATH and the C locale of our environment, and killed by the kernel if this process dies."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=nmap_environment(),
        preexec_fn=die_with_parent(os.getpid()),
        limit=_LINE_LIMIT,
    )


async def reap(process: asyncio.subprocess.Process) -> None:
    """A run that did not end (cancelled, timed out): SIGKILL, then reap. nmap does not fork,
    so this stops every probe."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def with_targets(argv: list[str], addresses: Sequence[IPAddress]) -> tuple[list[str], bytes | None]:
    """`argv` with the targets, and what nmap reads on stdin: a few on the command line, more
    as a list on stdin (-iL -), away from argv limits and from ps."""
    targets = [str(address) for address in addresses]
    if len(targets) <= ARGV_TARGETS_MAX:
        return [*argv, *targets], None
    return [*argv, "-iL", "-"], "".join(f"{target}\n" for target in targets).encode()


def nmap_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """All nmap gets of our environment: where programs are, and the C locale (its messages,
    which _judge_run reads, stay in English). Never a GOALKEEPER_* secret."""
    return {"PATH": environ.get("PATH", os.defpath), "LC_ALL": "C"}


def die_with_parent(parent: int) -> Callable[[], None]:
    """A pre-exec hook: the kernel SIGKILLs nmap when the thread that started it dies (the event
    loop's), so a daemon killed with SIGKILL leaves no scan running beside its successor.
    Resolved here, in the parent: the child, forked beside other threads, only makes the call."""
    prctl = _LIBC.prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would kill us then
            os._exit(1)

    return hook


class _XmlReader(nmap.PortScanner):  # type: ignore[misc]
    """python-nmap's parse, without its constructor: that runs `nmap -V` (with this process's
    whole environment, secrets included) only to learn a version nothing here reads.
    analyse_nmap_xml_scan sets every attribute it uses; one reader per document, because it
    keeps the document on the instance while it parses and the parsing threads run at once."""

    def __init__(self) -> None:  # the parent's only other work is the nmap -V run
        self._scan_result: dict[str, Any] = {}
        self._nmap_last_output = ""


def _parse(document: str) -> dict[str, Any]:
    parsed: dict[str, Any] = _XmlReader().analyse_nmap_xml_scan(document)
    return parsed


def _exit_reason(returncode: int | None, stderr: list[str]) -> str:
    if returncode is not None and returncode < 0:
        return f"nmap was killed by {signal.Signals(-returncode).name}"
    lines = [line.strip() for line in stderr if line.strip()]
    first = next((line for line in lines if not _WARNING.match(line)), lines[0] if lines else "")
    return f"nmap failed: {first or f'exit status {returncode}'}"


def _judge_run(document: bytes, stderr: list[str], batch: Batch, probe: _Probe) -> _Outcome:
    """Decide, from one finished nmap run, which hosts were scanned and what was open.

    Runs in a worker thread. Raises _BatchFailed when the run as a whole cannot be trusted.
    """
    members = {str(address): address for address in batch.addresses}
    not_scanned = _errors_by_host(stderr, members)
    for host in _timed_out_hosts(document, targets=len(members)):
        if host in members:
            not_scanned[members[host]] = HOST_TIMEOUT_REASON
    scanned = frozenset(members.values()) - not_scanned.keys()
    try:
        parsed = _parse(document.decode("utf-8", "replace"))
    except Exception as err:  # python-nmap raises PortScannerError, or anything on odd XML
        raise _BatchFailed(f"python-nmap could not read nmap's XML: {err}") from None
    open_ports: list[OpenPort] = []
    for host, details in parsed.get("scan", {}).items():
        found = members.get(host)
        if found is not None and found in scanned:
            open_ports.extend(_open_ports(found, details, probe))
    return _Outcome(scanned=scanned, open_ports=tuple(open_ports), not_scanned=not_scanned)


def _errors_by_host(stderr: list[str], members: Mapping[str, IPAddress]) -> dict[IPAddress, str]:
    """The hosts nmap's stderr names in an error, with the error; _BatchFailed for an error it
    pins on no host (that may have hit any of them)."""
    not_scanned: dict[IPAddress, str] = {}
    for line in (line.strip() for line in stderr):
        if not line or _WARNING.match(line):
            continue
        named = [members[t] for t in _tokens(line) if t in members]
        if not named:
            raise _BatchFailed(f"nmap failed: {line}")
        for address in named:
            not_scanned.setdefault(address, f"nmap error: {line}"[:_MAX_REASON])
    return not_scanned


def _open_ports(found: IPAddress, details: Mapping[str, Any], probe: _Probe) -> list[OpenPort]:
    ports: list[OpenPort] = []
    for transport, wanted in ((Transport.TCP, probe.tcp), (Transport.UDP, probe.udp)):
        for port, state in details.get(str(transport), {}).items():
            # `open` only: for UDP `open|filtered` just means nothing answered.
            if state.get("state") == "open" and port in wanted:
                # No evidence yet: nmap's port-table name is a guess, never shown to anyone;
                # goalkeeper.scanning.verify says what really answered.
                ports.append(OpenPort(found, port, transport))
    return ports


def _timed_out_hosts(document: bytes, *, targets: int) -> set[str]:
    """The addresses of <host timedout="true">, read straight from the XML (python-nmap drops
    the flag). _BatchFailed unless nmap finished with success and counted every target."""
    timed_out: set[str] = set()
    facts: dict[str, dict[str, str]] = {}
    try:
        # nmap's own output for our run: expat fetches no external entities and, since 2.4.1,
        # caps entity expansion; hosts are cleared as they pass to keep memory flat.
        for _, element in ElementTree.iterparse(io.BytesIO(document), events=("end",)):  # noqa: S314
            if element.tag == "host":
                if element.get("timedout") == "true":
                    timed_out.update(
                        a.get("addr", "")
                        for a in element.iter("address")
                        if a.get("addrtype") in ("ipv4", "ipv6")
                    )
                element.clear()
            elif element.tag in ("finished", "hosts"):
                facts[element.tag] = dict(element.attrib)
    except ElementTree.ParseError as err:
        raise _BatchFailed(f"nmap's XML output is unreadable ({err})") from None
    finished = facts.get("finished", {})
    if finished.get("exit") != "success":
        why = finished.get("errormsg") or 'no <finished exit="success"> in its output'
        raise _BatchFailed(f"nmap did not finish: {why}")
    # Under --open a skipped target leaves no trace in <host> elements; only the count shows it.
    counted = facts.get("hosts", {}).get("total")
    if counted != str(targets):
        raise _BatchFailed(f"nmap counted {counted} targets of the {targets} it was given")
    return timed_out


def _tokens(line: str) -> set[str]:
    found: set[str] = set()
    for token in _TOKEN.findall(line):
        token = token.rstrip(".:")  # the end of a sentence or of "host:"
        found.update((token, token.rsplit(":", 1)[0]))  # "127.0.0.1:6379" names 127.0.0.1
    return found
