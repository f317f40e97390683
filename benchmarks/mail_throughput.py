"""Mail throughput: 2,000 owners' reports into the SMTP sink, a connection per mail or reused.

The mails are rendered by the real renderer (one to three exposed servers each, data only in
198.18.0.0/15, the benchmarking range: nothing is scanned or contacted there) and sent by the
real SmtpMailer to the simulated SMTP sink, which runs in a child process so that its parsing
does not share this interpreter. Only 127.0.0.1 is contacted.

    python -m benchmarks.mail_throughput [--owners 2000] [--per-mail-sample 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from ipaddress import IPv4Address
from multiprocessing.connection import Connection
from typing import TextIO

import structlog

from goalkeeper import logs
from goalkeeper.config import EmailSettings
from goalkeeper.findings import group_reports
from goalkeeper.model import Finding, OutgoingMail, Owner, Target, Transport
from goalkeeper.notify.email import KeptConnection, SmtpMailer
from goalkeeper.notify.render import render_owner_report
from goalkeeper.scanning.catalog import load_catalog
from goalkeeper_sim.smtp import SmtpSink

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
BASE = int(IPv4Address("198.18.0.0"))
SENDER = "Goalkeeper <security@provider.example>"
SERVICES = ((6379, "redis"), (27017, "mongodb"), (9200, "elasticsearch"), (3306, "mysql"))


def rendered_mails(owners: int) -> list[OutgoingMail]:
    catalog = load_catalog()
    findings = []
    for index in range(owners * 2):  # two servers per owner on average, one to three ports
        owner_no = index % owners
        owner = Owner(f"Owner {owner_no}", f"owner{owner_no}@customer{owner_no}.example")
        target = Target(
            address=IPv4Address(BASE + index),
            server_name=f"server-{index}",
            server_id=f"srv-{index:08d}",
            project_id=f"project-{owner_no}",
            project_name=f"project {owner_no}",
            owner=owner,
        )
        for port, service in SERVICES[: 1 + index % 3]:
            findings.append(Finding(target.address, port, Transport.TCP, service, target, NOW, NOW))
    reports = group_reports(findings, ops_email="security@provider.example", redirect=False)
    return [
        render_owner_report(
            report,
            environment="prod",
            run_id="bench",
            sender=SENDER,
            advice={f.service: catalog.advice_for(f.service) for f in report.findings},
            generated_at=NOW,
        )
        for report in reports
    ]


def serve_sink(channel: Connection) -> None:
    """The child: an SMTP sink on 127.0.0.1 until told 'stop'; 'count' answers mails kept."""
    with SmtpSink() as sink:
        channel.send(sink.port)
        while (command := channel.recv()) != "stop":
            if command == "count":
                channel.send(len(sink.messages))


async def send_all(port: int, mails: Sequence[OutgoingMail], *, reuse: bool) -> float:
    settings = EmailSettings(host="127.0.0.1", port=port, starttls=False, timeout=30)
    mailer = SmtpMailer(
        settings,
        kept=KeptConnection() if reuse else None,
        local_hostname="bench.goalkeeper.test",
    )
    started = time.perf_counter()
    try:
        for mail in mails:
            await mailer.send(mail)
    finally:
        await mailer.aclose()
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--owners", type=int, default=2000)
    parser.add_argument("--per-mail-sample", type=int, default=200)
    args = parser.parse_args(argv)
    # One JSON line per mail, as the daemon writes it: part of the cost, not of the output.
    with open(os.devnull, "w", encoding="utf-8") as devnull, _logging_to(devnull):
        return _measure(args.owners, args.per_mail_sample)


@contextmanager
def _logging_to(stream: TextIO) -> Iterator[None]:
    """Goalkeeper's logging into `stream` for a while, then as it was: the smoke test runs main()
    in-process, and a handler left on the closed stream would fail every later test's log line."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    config = structlog.get_config()
    logs.configure(level="info", fmt="json", stream=stream)
    try:
        yield
    finally:
        structlog.configure(**config)
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, library_level in libraries.items():
            logging.getLogger(name).setLevel(library_level)


def _measure(owners: int, per_mail_sample: int) -> int:
    started = time.perf_counter()
    mails = rendered_mails(owners)
    rendering = time.perf_counter() - started
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=serve_sink, args=(theirs,), daemon=True
    )
    child.start()
    try:
        port = ours.recv()
        sample = mails[:per_mail_sample]
        per_mail = asyncio.run(send_all(port, sample, reuse=False))
        reused = asyncio.run(send_all(port, mails, reuse=True))
        ours.send("count")
        kept = ours.recv()
    finally:
        ours.send("stop")
        child.join(timeout=30)
    expected = len(sample) + len(mails)
    print(f"\nmail: {len(mails)} owners' reports, rendered in {rendering:.1f} s")
    print(
        f"  a connection per mail:   {len(sample):5d} mails in {per_mail:6.1f} s "
        f"= {len(sample) / per_mail:6.0f} mails/s"
    )
    print(
        f"  one connection reused:   {len(mails):5d} mails in {reused:6.1f} s "
        f"= {len(mails) / reused:6.0f} mails/s (at most 100 mails a connection)"
    )
    if kept != expected:
        print(f"FAILED: the sink kept {kept} mails of {expected} sent")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
