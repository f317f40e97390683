"""Command line: argv → settings → one command → exit code.

Exit codes are a contract that scripts and CronJobs rely on (README.md lists them): 0 done, 1 a
tick failed or the state store cannot be opened, 2 a usage or configuration error (one message
listing every problem), 3 a tick done whose messages were not all delivered (they stay in the
outbox). Command output goes to stdout, logs to stderr. Nothing here holds logic a test would
want to reach another way.
Past 300 lines: one parser and one small function per command, each a few lines, in one table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import goalkeeper
from goalkeeper import config, logs
from goalkeeper.config import ConfigError, Settings
from goalkeeper.validity import load_settings, scope_problem, static_inventory_warnings

if TYPE_CHECKING:
    from goalkeeper.model import Finding, TickReport
    from goalkeeper.state import Channel

# The daemon, the tick and the state store load only inside the command that uses them:
# `--help`, `check-config` and `findings` start in a fraction of the time the whole tick's
# libraries (openstacksdk, aiohttp, APScheduler's scheduler) take to import.


EXIT_OK, EXIT_TICK_FAILED, EXIT_USAGE, EXIT_UNDELIVERED = 0, 1, 2, 3


class _Version(argparse.Action):
    """argparse's "version" action, asking the installed metadata only when --version is given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"{parser.prog} {goalkeeper.version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $GOALKEEPER_CONFIG, else ./config.yaml)",
    )
    parser = argparse.ArgumentParser(
        prog="goalkeeper",
        parents=[common],
        description="Finds dangerous services exposed by cloud servers and tells their owners.",
        epilog="exit codes: 0 done; 1 a tick failed, or the state store cannot be opened; "
        "2 invalid configuration or usage; 3 (scan) the tick is done but some messages were "
        "not delivered: they are kept in the outbox and sent again later",
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    scan = commands.add_parser(
        "scan",
        parents=[common],
        help="run one full tick now, then exit",
        description="Run one full tick now, wait for its messages, then exit.",
        epilog="exit codes: 0 done; 1 the tick failed (no inventory, no host scanned, state store "
        "unavailable); 2 invalid configuration or usage; 3 done, but some messages were not "
        "delivered (kept in the outbox, sent again later)",
    )
    scan.add_argument("--dry-run", action="store_true", help="send nothing; print the report")
    scan.add_argument("--json", action="store_true", help="print the tick report as JSON")
    commands.add_parser(
        "run",
        parents=[common],
        help="the daemon: scan on schedule, serve probes",
        description="The daemon: run a tick on the schedule, send the outbox, serve /healthz, "
        "/readyz, /metrics and the admin API until SIGTERM; SIGHUP reloads the config.",
        epilog="exit codes: 0 after a clean shutdown; 1 the state store cannot be opened; "
        "2 invalid configuration, or the HTTP port cannot be opened",
    )
    findings = commands.add_parser(
        "findings",
        parents=[common],
        help="open findings from the state store",
        description="List the findings the state store holds (open and unmonitored; --all: "
        "resolved too). Read-only: a SQLite store that does not exist is not created.",
        epilog="exit codes: 0 listed; 1 the state store cannot be opened or read (a corrupt "
        "database too); 2 invalid configuration or usage, or no state store at state.url",
    )
    findings.add_argument("--all", action="store_true", help="resolved findings too")
    findings.add_argument("--json", action="store_true", help="print them as JSON")
    findings.add_argument(
        "--latent",
        action="store_true",
        help="instead: the last tick's latent exposures (rules open to the world on catalog "
        "ports where nothing answered; advisories, never findings)",
    )
    commands.add_parser(
        "check-config",
        parents=[common],
        help="validate and print the effective config",
        description="Validate the config file and GOALKEEPER_* variables as scan and run would, "
        "and print the effective config with secrets redacted.",
        epilog="exit codes: 0 valid; 2 invalid, or nothing could be scanned with it (every "
        "problem listed)",
    )
    retry = commands.add_parser(
        "retry-failed",
        parents=[common],
        help="move failed messages back to pending (a running daemon sends them within 5 min)",
        description="Move failed messages back to pending with their attempts reset (all, one "
        "channel's, or the ones named by --id); a running daemon sends them on its next pass.",
        epilog="exit codes: 0 done; 1 the state store failed; 2 invalid configuration or usage",
    )
    retry.add_argument("--channel", choices=("email", "telegram"), help="only this channel")
    retry.add_argument(
        "--id",
        type=int,
        action="append",
        dest="ids",
        metavar="N",
        help="only message N (repeatable)",
    )
    demo = commands.add_parser(
        "demo",
        help="run one real tick against a simulated cloud on loopback (needs no config)",
        description="Start the simulated cloud (OpenStack, Fleio, SMTP, Telegram, open ports) on "
        "loopback, run one real tick against it and print where its mails went.",
        epilog="exit codes: 0 done; 2 the simulator is not installed",
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="where mails are written")
    demo.add_argument("--seed", type=int, default=1, help="the simulated cloud's random seed")
    demo.add_argument("--projects", type=int, default=10, help="projects in the simulated cloud")
    demo.add_argument("--servers-per-project", type=int, default=6, help="servers per project")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return demo(
            args.out,
            seed=args.seed,
            projects=args.projects,
            servers_per_project=args.servers_per_project,
        )
    path = config.resolve_path(getattr(args, "config", None))
    try:
        settings = load_settings(path)
    except ConfigError as err:
        _print_problems(err, sys.stderr)
        return EXIT_USAGE
    logs.configure(
        level=settings.logging.level, fmt=settings.logging.format, secrets=settings.secrets()
    )
    if args.command == "check-config":
        return check_config(
            settings, sys.stdout, warnings=static_inventory_warnings(settings, path)
        )
    if args.command == "scan":
        return asyncio.run(scan(settings, path, dry_run=args.dry_run, as_json=args.json))
    if args.command == "findings":
        return asyncio.run(
            list_findings(
                settings, include_resolved=args.all, as_json=args.json, latent=args.latent
            )
        )
    if args.command == "run":
        return run(settings, path)
    if args.command == "retry-failed":
        return asyncio.run(retry(settings, channel=args.channel, ids=args.ids))
    raise AssertionError(f"unhandled command {args.command}")  # argparse allows no other


def demo(out_dir: Path, *, seed: int, projects: int, servers_per_project: int) -> int:
    # Loaded by name, not imported: the simulator is a separate package the image leaves out, so
    # the product's import graph (which import-linter holds to "never the simulator") has no edge
    # to it, and it never loads into the daemon's process.
    try:
        simulator = importlib.import_module("goalkeeper_sim.demo")
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if missing not in {"goalkeeper_sim", "aiosmtpd"}:
            raise
        print(
            f"goalkeeper: the simulator is not installed (no module {missing}): "
            "pip install -e '.[sim]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    logs.configure(level="warning", fmt="console")
    asyncio.run(
        simulator.run_demo(
            out_dir, seed=seed, projects=projects, servers_per_project=servers_per_project
        )
    )
    return EXIT_OK


def run(settings: Settings, path: Path) -> int:
    from goalkeeper.daemon import serve
    from goalkeeper.probes import BindError
    from goalkeeper.state import StateUnavailable

    problem = scope_problem(settings)
    if problem:
        print(f"goalkeeper: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(serve(settings, path))
    except BindError as err:
        print(f"goalkeeper: {err}", file=sys.stderr)
        return EXIT_USAGE
    except StateUnavailable as err:  # at start: said in one line, not a traceback
        print(f"goalkeeper: {logs.REDACTOR.scrub_text(str(err))}", file=sys.stderr)
        return EXIT_TICK_FAILED
    return EXIT_OK


async def list_findings(
    settings: Settings, *, include_resolved: bool, as_json: bool, latent: bool = False
) -> int:
    from goalkeeper.state import StateError, StateStore, StateUnavailable
    from goalkeeper.state.filewatch import sqlite_file
    from goalkeeper.views import record_as_dict

    database = sqlite_file(settings.state.url)
    if database is not None and not database.exists():  # opening it would create it
        print(
            f"goalkeeper: no state store at {database} (state.url): nothing to list; "
            "point --config or GOALKEEPER_STATE__URL at the one scan or run writes",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        async with StateStore.opened(settings.state.url) as store:
            if latent:
                rows = [r.as_dict() for r in await store.load_latent()]
            else:
                records = await store.list_findings(include_resolved=include_resolved)
                rows = [record_as_dict(r) for r in records]
    except StateUnavailable as err:
        print(f"goalkeeper: {logs.REDACTOR.scrub_text(str(err))}", file=sys.stderr)
        return EXIT_TICK_FAILED
    except StateError as err:
        print(f"goalkeeper: cannot read the state store: {err}", file=sys.stderr)
        return EXIT_TICK_FAILED
    if as_json:
        print_json(rows, sys.stdout)
        return EXIT_OK
    if latent:
        _print_table(
            ("ADDRESS", "PORT", "SERVER", "OWNER", "RULES", "SEEN"),
            [
                (
                    r["address"],
                    f"{r['port']}/{r['protocol']}",
                    r["server_name"] or r["server_id"],
                    r["recipient_key"],
                    ", ".join(rule["rule_id"] for rule in r["rules"]),
                    r["seen_at"][:16].replace("T", " "),
                )
                for r in rows
            ],
        )
        return EXIT_OK
    header = ("ADDRESS", "PORT", "SERVICE", "OWNER", "FIRST SEEN", "LAST SEEN", "STATUS", "MAILED")
    _print_table(
        header,
        [
            (
                r["address"],
                f"{r['port']}/{r['protocol']}",
                r["service"],
                r["owner_email"] or f"NOT FOUND ({r['project_name'] or r['project_id']})",
                r["first_seen"][:16].replace("T", " "),
                r["last_seen"][:16].replace("T", " "),
                _status_cell(r),
                str(r["times_notified"]),
            )
            for r in rows
        ],
    )
    return EXIT_OK


def _print_table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> None:
    table = [header, *body]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _status_cell(row: dict[str, Any]) -> str:
    """The status, with why it is unmonitored or whose exception acknowledges it until when."""
    if row["unmonitored_reason"]:
        return f"{row['status']} ({row['unmonitored_reason']})"
    exception = row["exception"]
    if exception and row["status"] == "acknowledged":
        capped = ", capped" if exception["capped"] else ""
        return (
            f"acknowledged ({exception['source']} until {exception['until']}{capped}: "
            f"{exception['reason']})"
        )
    return str(row["status"])


async def retry(settings: Settings, *, channel: Channel | None, ids: list[int] | None) -> int:
    from goalkeeper.resend import retry_failed
    from goalkeeper.state import StateError, StateStore

    who = f"cli by {getpass.getuser()}"
    try:
        async with StateStore.opened(settings.state.url) as store:
            retried = await retry_failed(store, channel=channel, ids=ids, who=who)
    except StateError as err:
        print(f"goalkeeper: cannot update the state store: {err}", file=sys.stderr)
        return EXIT_TICK_FAILED
    moved = ", ".join(str(i) for i in retried.moved) or "none"
    print(f"moved back to pending: {len(retried.moved)} message(s) ({moved})")
    for message_id, why in retried.skipped.items():
        print(f"  not moved: {message_id}: {why}")
    if retried.moved:
        print("a running daemon sends them on its next pass (within 5 minutes)")
    return EXIT_OK


def check_config(settings: Settings, out: TextIO, *, warnings: Sequence[str] = ()) -> int:
    import yaml

    from goalkeeper.scanning.catalog import load_catalog

    data = config.redacted(settings)
    if settings.scan.ports is None:  # show what "the catalog" means
        data["scan"]["ports"] = [
            {"port": p.port, "protocol": str(p.protocol), "service": p.service}
            for p in load_catalog().ports
        ]
    yaml.safe_dump(data, out, sort_keys=False)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    problem = scope_problem(settings)
    if problem:  # what scan and run refuse, refused here the same way
        print(f"goalkeeper: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


async def scan(settings: Settings, path: Path, *, dry_run: bool, as_json: bool) -> int:
    from goalkeeper.pipeline import tick_problem
    from goalkeeper.progress import terminal_bar
    from goalkeeper.state import StateUnavailable
    from goalkeeper.views import report_as_dict
    from goalkeeper.wiring import one_tick

    problem = scope_problem(settings)
    if problem:
        print(f"goalkeeper: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with terminal_bar(sys.stderr) as bar:
            report = await one_tick(settings, path, dry_run=dry_run, progress=bar)
    except ConfigError as err:  # the static inventory file changed since the check
        _print_problems(err, sys.stderr)
        return EXIT_USAGE
    except StateUnavailable as err:  # not a failure of the tick's code: no traceback
        print(f"goalkeeper: {logs.REDACTOR.scrub_text(str(err))}", file=sys.stderr)
        return EXIT_TICK_FAILED
    except Exception as err:  # any failure of the tick is exit 1, said plainly
        logs.get_logger(__name__).exception("tick failed", error=err)
        print(f"goalkeeper: the tick failed: {logs.REDACTOR.scrub_text(str(err))}", file=sys.stderr)
        return EXIT_TICK_FAILED
    if as_json:
        print_json(report_as_dict(report), sys.stdout)
    else:
        print_report(report, sys.stdout)
    why = tick_problem(report)
    if why:
        print(f"goalkeeper: the tick did not do its job: {why}", file=sys.stderr)
        return EXIT_TICK_FAILED
    unsent = undelivered(report)
    if unsent:
        print(
            f"goalkeeper: the tick is done, but not delivered: {unsent}; kept in the outbox "
            "(a pending message is sent again by the next scan or the daemon)",
            file=sys.stderr,
        )
        return EXIT_UNDELIVERED
    return EXIT_OK


def undelivered(report: TickReport) -> str | None:
    """What of the tick's messages did not reach anyone, in words; None when all did.

    A dry run sends nothing on purpose: nothing of it counts as undelivered.
    """
    if report.dry_run:
        return None
    mails = sum(1 for m in report.mails if not m.delivered and not m.queued)
    total = len(report.mails)
    undelivered = [f"{mails} of {total} mail{'s' * (total != 1)}"] if mails else []
    if report.summary_delivered is False:
        undelivered.append("the Telegram summary")
    return " and ".join(undelivered) or None


def _accepted(finding: Finding) -> str:
    ack = finding.acknowledged
    return f" ACKNOWLEDGED ({ack.source} until {ack.until.isoformat()})" if ack else ""


def print_json(data: object, out: TextIO) -> None:
    """JSON on `out`: indented for a person at a terminal; one line for a program, which the C
    encoder writes about ten times as fast (json's indenting encoder is pure Python: 0.3 s for
    a scan of 4,096 hosts)."""
    out.write(json.dumps(data, indent=2 if out.isatty() else None))
    out.write("\n")


def print_report(report: TickReport, out: TextIO) -> None:
    mode = " (dry run: nothing was sent)" if report.dry_run else ""
    print(f"Tick {report.run_id} [{report.environment}]{mode}", file=out)
    print(
        f"  targets {report.targets}, scanned {report.hosts_scanned}, "
        f"not scanned {len(report.not_scanned)}, refused {len(report.refused)}, "
        f"excluded {report.excluded}, findings {len(report.findings)}",
        file=out,
    )
    for address, why in report.not_scanned.items():
        print(f"  NOT SCANNED {address}: {why}", file=out)
    for finding in report.unmonitored:
        print(
            f"  NO LONGER MONITORED {finding.address} {finding.port}/{finding.protocol} "
            f"{finding.service}: {finding.unmonitored_reason}",
            file=out,
        )
    for finding in report.findings:
        target = finding.target
        print(
            f"  {finding.address} {finding.port}/{finding.protocol} {finding.service} "
            f"server={target.server_name!r} project={target.project_name or target.project_id!r} "
            f"owner={target.owner.email or 'NOT FOUND'}" + _accepted(finding),
            file=out,
        )
    for mail in report.mails:
        status = "delivered" if mail.delivered else (mail.error or "not delivered")
        meant = (
            f" (meant for {mail.intended})"
            if mail.intended and mail.intended != mail.recipient
            else ""
        )
        print(f"  mail to {mail.recipient}{meant}: {mail.subject!r} — {status}", file=out)
    if report.dry_run:
        from goalkeeper.notify.summary import render_summary

        print("\nTelegram summary that would be posted:\n", file=out)
        print(render_summary(report), file=out)


def _print_problems(err: ConfigError, out: TextIO) -> None:
    count = len(err.problems)
    print(f"goalkeeper: invalid configuration ({count} problem{'s' * (count != 1)}):", file=out)
    for problem in err.problems:
        print(f"  {problem}", file=out)


def entry() -> NoReturn:
    """The `goalkeeper` command: main(), then a fast exit.

    At exit the interpreter's last garbage collection walks every object a tick left behind
    (0.45 s after a scan of 1,024 hosts, docs/performance.md); frozen first, they are skipped.
    Nothing is lost: objects are still freed by reference counting, files and connections are
    closed by the commands themselves, and atexit handlers still run."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
