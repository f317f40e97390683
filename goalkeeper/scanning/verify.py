"""Service verification: a second, short nmap phase over the pairs the port scan found open.

It proves what each open port exposes (DESIGN §7): `-sV --version-light` and the catalog's
scripts (nmap's `safe` category only), bounded by --script-timeout and --host-timeout. Pairs
are grouped by port, so one run covers every host open on it and the stage grows with open
pairs, not with hosts. It honours the port scan's rules: the same allowlisted nmap arguments,
the same environment and death-with-parent, TCP by connect (which needs no raw socket), UDP
only where the port scan could scan it (scan.privileged). A run that fails or times out leaves
its findings `reachable`, with that said; it never loses one. Grading is goalkeeper.scanning
.grading's; this module runs nmap and reads its XML.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shlex
import shutil
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from goalkeeper.aio import Closing
from goalkeeper.config import ScanSettings
from goalkeeper.model import IPAddress, OpenPort, PortSpec, ScanResult, Transport
from goalkeeper.scanning.catalog import Catalog
from goalkeeper.scanning.grading import ScriptAnswer, ServiceAnswer, grade_answer
from goalkeeper.scanning.nmap import NmapScanner, reap, start_nmap, with_targets

log = structlog.get_logger(__name__)

PairKey = tuple[str, int, Transport]  # (address, port, protocol)
_REPLACED = {"--host-timeout", "--versiondb"}  # verification sets its own
_MAX_REASON = 160
# How long -sV waits for each probe's answer. nmap's probe file says 6 s for the first (a
# banner) and 5 s for the rest; a service that stays silent costs every one of them, and most
# do (Redis, Memcached, Elasticsearch wait to be asked). 2 s is still many round trips across
# the world; the saving is most of the stage's time (docs/performance.md).
PROBE_WAIT_MS = 2000
# Verification runs at once. A run spends nearly all its time waiting for probe answers and
# sends a few packets per open pair, so many share the cores well; the rate ceiling
# (scan.max_rate) is divided among them all the same.
RUNS_AT_ONCE = 16
SERVICE_PROBES = "nmap-service-probes"


def bounded_probes(text: str, *, wait_ms: int = PROBE_WAIT_MS) -> str:
    """nmap's service probe file with every probe's wait (`totalwaitms`) set to `wait_ms`."""
    lines = []
    for line in text.splitlines():
        if line.startswith("totalwaitms"):
            continue
        lines.append(line)
        if line.startswith("Probe "):
            lines.append(f"totalwaitms {wait_ms}")
    return "\n".join(lines) + "\n"


def _probe_file(nmap_path: str) -> Path | None:
    """Where nmap's own service probe file is, beside its binary or in the usual place."""
    binary = shutil.which(nmap_path)
    places = [Path(binary).resolve().parent.parent / "share" / "nmap"] if binary else []
    places.append(Path("/usr/share/nmap"))
    return next((p / SERVICE_PROBES for p in places if (p / SERVICE_PROBES).is_file()), None)


@dataclass(frozen=True, slots=True)
class VerifyGroup:
    """One verification run: every host open on one port, with that service's scripts."""

    port: int
    protocol: Transport
    service: str
    scripts: tuple[str, ...]
    addresses: tuple[IPAddress, ...]

    @property
    def version(self) -> int:
        return self.addresses[0].version


def plan_groups(
    open_ports: Sequence[OpenPort],
    services: Mapping[tuple[int, Transport], str],
    catalog: Catalog,
    *,
    batch_size: int,
) -> list[VerifyGroup]:
    """The runs that verify `open_ports`: one per (port, protocol, address family), split into
    runs of at most `batch_size` hosts. Pairs whose port is not on the list are left out."""
    hosts: dict[tuple[int, Transport, int], list[IPAddress]] = defaultdict(list)
    for pair in open_ports:
        if (pair.port, pair.protocol) in services:
            hosts[(pair.port, pair.protocol, pair.address.version)].append(pair.address)
    groups = []
    for (port, protocol, _), addresses in sorted(hosts.items(), key=lambda kv: kv[0]):
        service = services[(port, protocol)]
        ordered = sorted(set(addresses), key=int)
        for start in range(0, len(ordered), batch_size):
            groups.append(
                VerifyGroup(
                    port=port,
                    protocol=protocol,
                    service=service,
                    scripts=catalog.check_for(service).scripts,
                    addresses=tuple(ordered[start : start + batch_size]),
                )
            )
    return groups


def verify_argv(
    group: VerifyGroup,
    settings: ScanSettings,
    *,
    nmap_path: str = "nmap",
    max_rate: int,
    probes: Path | None = None,
) -> list[str]:
    """nmap's argument vector for one run (targets come after, on argv or stdin)."""
    base = _without_replaced(shlex.split(settings.nmap_arguments))
    base += [flag for flag in ("-Pn", "-n") if flag not in base]
    scan_type = "-sT" if group.protocol is Transport.TCP else "-sU"
    letter = "T" if group.protocol is Transport.TCP else "U"
    argv = [nmap_path, *base, "-oX", "-", scan_type, "-sV", "--version-light"]
    argv += ["--versiondb", str(probes)] if probes is not None else []
    argv += ["-p", f"{letter}:{group.port}", *(("-6",) if group.version == 6 else ())]
    if group.scripts:
        argv += ["--script", ",".join(group.scripts)]
        argv += ["--script-timeout", f"{settings.verify.script_timeout:g}s"]
    argv += ["--host-timeout", f"{settings.verify.host_timeout:g}s"]
    argv += ["--max-rate", str(max_rate)]
    return argv


def _without_replaced(tokens: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for token in tokens:
        if skip:
            skip = False
            continue
        name, equals, _ = token.partition("=")
        if name in _REPLACED:
            skip = not equals
            continue
        kept.append(token)
    return kept


@dataclass(frozen=True, slots=True)
class RunAnswers:
    """What one verification run saw: the answers per pair, and hosts it could not finish."""

    answers: Mapping[PairKey, ServiceAnswer]
    timed_out: frozenset[str]


def parse_answers(document: bytes) -> RunAnswers:
    """Read nmap's XML: each port's state, -sV's service and the scripts' results.

    Raises ValueError when the document is unreadable or nmap did not finish."""
    answers: dict[PairKey, ServiceAnswer] = {}
    timed_out: set[str] = set()
    finished = ""
    try:
        # nmap's own output for our run: expat fetches no external entities.
        for _, element in ElementTree.iterparse(io.BytesIO(document), events=("end",)):  # noqa: S314
            if element.tag == "host":
                address = next(
                    (a.get("addr", "") for a in element.iter("address")
                     if a.get("addrtype") in ("ipv4", "ipv6")), "",
                )  # fmt: skip
                if element.get("timedout") == "true":
                    timed_out.add(address)
                for port in element.iter("port"):
                    key = (address, int(port.get("portid", "0")), Transport(port.get("protocol")))
                    answers[key] = _answer(port)
                element.clear()
            elif element.tag == "finished":
                finished = element.get("exit", "")
    except (ElementTree.ParseError, ValueError) as err:
        raise ValueError(f"nmap's XML output is unreadable ({err})") from None
    if finished != "success":
        raise ValueError('nmap did not finish (no <finished exit="success">)')
    return RunAnswers(answers=answers, timed_out=frozenset(timed_out))


def _answer(port: ElementTree.Element) -> ServiceAnswer:
    state = port.find("state")
    service = port.find("service")
    attrs = service.attrib if service is not None else {}
    scripts = {s.get("id", ""): _script(s) for s in port.findall("script")}
    return ServiceAnswer(
        state=state.get("state", "") if state is not None else "",
        name=attrs.get("name", ""),
        product=attrs.get("product", ""),
        version=attrs.get("version", ""),
        extrainfo=attrs.get("extrainfo", ""),
        method=attrs.get("method", ""),
        scripts=scripts,
    )


def _script(element: ElementTree.Element) -> ScriptAnswer:
    values: dict[str, str] = {}
    counts: dict[str, int] = {}
    unkeyed = 0
    for child in element:
        key = child.get("key")
        if key is None:
            unkeyed += 1
        elif child.tag == "elem":
            values[key] = child.text or ""
        elif child.tag == "table":
            counts[key] = len(child)
    if unkeyed:
        counts[""] = unkeyed
    return ScriptAnswer(output=element.get("output", ""), values=values, counts=counts)


class VerifyingScanner(Closing):
    """A Scanner whose open ports come back graded: the port scan, then verification.

    `timings` holds, after each scan, the wall seconds of the port scan ("scan"), of the
    verification stage ("verify"), and of the runs per service ("verify:<service>")."""

    def __init__(
        self, scanner: NmapScanner, settings: ScanSettings, catalog: Catalog, *,
        nmap_path: str = "nmap",
    ) -> None:  # fmt: skip
        self._scanner = scanner
        self._settings = settings
        self._catalog = catalog
        self._nmap_path = nmap_path
        self._slots = asyncio.Semaphore(RUNS_AT_ONCE)
        # Raw UDP runs capture; without a source address of their own, one at a time.
        self._udp = asyncio.Semaphore(1)
        self.timings: dict[str, float] = {}
        # nmap's probes with a shorter wait each (PROBE_WAIT_MS), read once per scanner.
        self._scratch = tempfile.TemporaryDirectory(prefix="goalkeeper-verify-")
        self._probes: Path | None = None
        if (source := _probe_file(nmap_path)) is not None:
            self._probes = Path(self._scratch.name) / SERVICE_PROBES
            self._probes.write_text(
                bounded_probes(source.read_text(encoding="utf-8", errors="replace"))
            )

    async def aclose(self) -> None:
        self._scratch.cleanup()
        await self._scanner.aclose()

    async def scan(self, addresses: Sequence[IPAddress], ports: Sequence[PortSpec]) -> ScanResult:
        started = time.perf_counter()
        result = await self._scanner.scan(addresses, ports)
        self.timings = {"scan": time.perf_counter() - started}
        started = time.perf_counter()
        verified = await self.verify(result, ports)
        self.timings["verify"] = time.perf_counter() - started
        return verified

    async def verify(self, result: ScanResult, ports: Sequence[PortSpec]) -> ScanResult:
        """`result` with its open ports graded; UDP ports whose service never answered go."""
        services = {(p.port, p.protocol): p.service for p in ports}
        groups = plan_groups(
            result.open_ports, services, self._catalog, batch_size=self._settings.batch_size
        )
        if not groups:
            return result
        async with asyncio.TaskGroup() as tasks:
            runs = [
                tasks.create_task(self._run(group), name=f"nmap-verify-{group.service}-{index}")
                for index, group in enumerate(groups)
            ]
        answers: dict[PairKey, ServiceAnswer] = {}
        failures: dict[PairKey, str] = {}
        for run in runs:
            found, failed = run.result()
            answers.update(found)
            failures.update(failed)
        graded: list[OpenPort] = []
        for pair in result.open_ports:
            service = services.get((pair.port, pair.protocol))
            if service is None:
                graded.append(pair)
                continue
            key = (str(pair.address), pair.port, pair.protocol)
            verdict = grade_answer(
                self._catalog.check_for(service),
                pair.protocol,
                answers.get(key),
                failure=failures.get(key),
            )
            if verdict is not None:
                graded.append(replace(pair, grade=verdict.grade, evidence=verdict.evidence))
        log.info(
            "nmap.verify",
            pairs=len(result.open_ports),
            runs=len(groups),
            failed=len(failures),
            dropped=len(result.open_ports) - len(graded),
        )
        return replace(result, open_ports=tuple(graded), nmap_runs=result.nmap_runs + len(groups))

    async def _run(
        self, group: VerifyGroup
    ) -> tuple[dict[PairKey, ServiceAnswer], dict[PairKey, str]]:
        keys = [(str(a), group.port, group.protocol) for a in group.addresses]
        started = time.perf_counter()
        try:
            async with contextlib.AsyncExitStack() as held:
                await held.enter_async_context(self._slots)
                if group.protocol is Transport.UDP:
                    await held.enter_async_context(self._udp)
                started = time.perf_counter()  # the run's own time, not its wait for a slot
                document = await self._nmap(group)
            parsed = parse_answers(document)
        except (OSError, ValueError, TimeoutError) as err:
            reason = str(err) or type(err).__name__
            log.warning("nmap.verify_failed", service=group.service, hosts=len(keys), reason=reason)
            return {}, dict.fromkeys(keys, reason[:_MAX_REASON])
        finally:
            name = f"verify:{group.service}"
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
        limit = f"timed out after {self._settings.verify.host_timeout:g} s"
        failed = {k: limit for k in keys if k[0] in parsed.timed_out}
        return dict(parsed.answers), failed

    async def _nmap(self, group: VerifyGroup) -> bytes:
        argv = verify_argv(
            group, self._settings, nmap_path=self._nmap_path,
            max_rate=max(1, self._settings.max_rate // RUNS_AT_ONCE), probes=self._probes,
        )  # fmt: skip
        argv, stdin = with_targets(argv, group.addresses)
        process = await start_nmap(argv, stdin=stdin)
        # nmap's own --host-timeout bounds each host; this bounds a run that hangs anyway.
        bound = self._settings.verify.host_timeout * 2 + 30
        try:
            async with asyncio.timeout(bound):
                stdout, stderr = await process.communicate(stdin)
        finally:
            await reap(process)
        if process.returncode != 0:
            lines = stderr.decode("utf-8", "replace").strip().splitlines()
            raise ValueError(f"nmap failed: {lines[0] if lines else process.returncode}")
        return stdout
