"""`goalkeeper scan` end to end: real nmap on loopback, a real SMTP server, the fake Telegram.

Listeners play open ports on 127.44.0.0/16; the CLI runs as a subprocess, exactly as an
operator runs it.
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml

from goalkeeper.cli import main, undelivered
from goalkeeper.model import MailOutcome, TickReport, Transport
from goalkeeper_sim.listeners import PortListeners
from goalkeeper_sim.smtp import SmtpSink
from goalkeeper_sim.telegram import FakeTelegram
from tests.daemon_process import free_port

EVIL = "<script>alert(1)</script>\r\nBcc: victim@evil.example"
INVENTORY = [
    {"address": "127.44.0.10", "server_name": "db-1", "project_id": "p-acme",
     "project_name": "acme-prod", "owner_name": "ACME Ltd", "owner_email": "admin@acme.example"},
    {"address": "127.44.0.11", "server_name": EVIL, "project_id": "p-acme",
     "project_name": "acme-prod", "owner_name": "ACME Ltd", "owner_email": "admin@acme.example"},
    {"address": "127.44.0.12", "server_name": "cache-1", "project_id": "p-beta",
     "project_name": "beta", "owner_name": "Beta", "owner_email": "ops@beta.example"},
    {"address": "127.44.0.13", "server_name": "orphan-1", "project_id": "p-lost",
     "project_name": "lost-project"},
    {"address": "127.44.0.14", "server_name": "clean-1", "project_id": "p-beta",
     "owner_email": "ops@beta.example"},
    {"address": "127.44.0.15", "server_name": "skipped", "project_id": "p-beta",
     "owner_email": "ops@beta.example"},
]  # fmt: skip
OPEN = [("127.44.0.10", 6379), ("127.44.0.10", 27017), ("127.44.0.11", 9200),
        ("127.44.0.12", 11211), ("127.44.0.13", 6379), ("127.44.0.15", 6379)]  # fmt: skip
PORTS = [
    {"port": 6379, "protocol": "tcp", "service": "redis"},
    {"port": 27017, "protocol": "tcp", "service": "mongodb"},
    {"port": 9200, "protocol": "tcp", "service": "elasticsearch"},
    {"port": 11211, "protocol": "tcp", "service": "memcached"},
    {"port": 3306, "protocol": "tcp", "service": "mysql"},
]


@dataclass
class Cloud:
    tmp: Path
    smtp: SmtpSink
    telegram: FakeTelegram

    def config(self, **changes: Any) -> Path:
        data: dict[str, Any] = {
            "environment": "prod",
            "scan": {"ports": PORTS, "allowed_networks": ["127.44.0.0/16"],
                     "exclude": ["127.44.0.15"], "allow_loopback": True, "privileged": False,
                     "nmap_arguments": "-Pn -n -T4 --max-retries 1 --host-timeout 30s"},
            "inventory": {"source": "static", "static_file": "inventory.yaml"},
            "notify": {"send_to_customers": True, "ops_email": "security@provider.example",
                       "sender": "Goalkeeper <security@provider.example>",
                       "email": {"host": self.smtp.host, "port": self.smtp.port,
                                 "starttls": False, "timeout": 5},
                       "telegram": {"enabled": True, "chat_id": "-100777",
                                    "api_base": self.telegram.url}},
            "logging": {"format": "json"},
            "state": {"url": f"sqlite+aiosqlite:///{self.tmp / 'state.db'}"},
        }  # fmt: skip
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        (self.tmp / "inventory.yaml").write_text(yaml.safe_dump({"targets": INVENTORY}))
        path = self.tmp / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    async def goalkeeper(
        self, *args: str, config: Path, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        env = {
            **os.environ,
            "GOALKEEPER_NOTIFY__TELEGRAM__TOKEN": self.telegram.token,
            **(env or {}),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "goalkeeper", "--config", str(config), *args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(120):
            out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    endpoints = [(ip_address(a), p, Transport.TCP) for a, p in OPEN]
    async with PortListeners(endpoints), SmtpSink() as smtp, FakeTelegram() as telegram:
        yield Cloud(tmp_path, smtp, telegram)


def plain(mail: Any) -> str:
    body = mail.message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def by_recipient(smtp: SmtpSink) -> dict[str, Any]:
    return {mail.rcpt_tos[0]: mail for mail in smtp.messages}


async def test_one_mail_per_owner_with_all_their_ports(cloud: Cloud) -> None:
    code, out, err = await cloud.goalkeeper("scan", "--json", config=cloud.config())
    assert code == 0, err
    report = json.loads(out)
    assert report["targets"] == 5 and report["excluded"] == 1
    assert report["hosts_scanned"] == 5 and report["not_scanned"] == {}
    assert sorted((f["address"], f["port"]) for f in report["findings"]) == sorted(
        (a, p) for a, p in OPEN if a != "127.44.0.15"
    )
    mails = by_recipient(cloud.smtp)
    assert sorted(mails) == ["admin@acme.example", "ops@beta.example", "security@provider.example"]
    assert len(cloud.smtp.messages) == 3  # one per owner, one NOT FOUND for the lost project
    acme = mails["admin@acme.example"].message
    acme_text = acme.get_body(preferencelist=("plain",)).get_content()
    for needle in ("127.44.0.10", "6379", "27017", "127.44.0.11", "9200"):
        assert needle in acme_text
    assert "127.44.0.12" not in acme_text  # another owner's server
    lost = mails["security@provider.example"].message
    assert "NOT FOUND" in lost["Subject"]
    assert "lost-project" in lost.get_body(preferencelist=("plain",)).get_content()
    assert all(m.message["Message-ID"] for m in cloud.smtp.messages)
    summary = "\n".join(m.plain for m in cloud.telegram.messages)
    assert "127.44.0.13" in summary and "[prod]" in summary


async def test_customer_strings_stay_inert_in_headers_and_html(cloud: Cloud) -> None:
    code, _, err = await cloud.goalkeeper("scan", config=cloud.config())
    assert code == 0, err
    raw = by_recipient(cloud.smtp)["admin@acme.example"].raw
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_all("Bcc") is None
    assert "victim@evil.example" not in "".join(f"{k}: {v}" for k, v in message.items())
    body = message.get_body(preferencelist=("html",))
    assert body is not None
    html = body.get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    tg = "\n".join(m.text for m in cloud.telegram.messages)
    assert "<script>" not in tg


async def test_stage_sends_everything_to_ops_showing_whom_it_was_for(cloud: Cloud) -> None:
    code, _, err = await cloud.goalkeeper("scan", config=cloud.config(environment="stage"))
    assert code == 0, err
    assert {m.rcpt_tos for m in cloud.smtp.messages} == {("security@provider.example",)}
    assert len(cloud.smtp.messages) == 3
    subjects = [m.message["Subject"] for m in cloud.smtp.messages]
    assert any("admin@acme.example" in s and "[stage]" in s for s in subjects), subjects
    assert any("ops@beta.example" in s for s in subjects), subjects


async def test_dry_run_sends_nothing_and_prints_the_report(cloud: Cloud) -> None:
    code, out, err = await cloud.goalkeeper("scan", "--dry-run", config=cloud.config())
    assert code == 0, err
    assert cloud.smtp.messages == [] and cloud.telegram.messages == []
    assert "dry run" in out
    assert "mail to admin@acme.example" in out
    assert "127.44.0.13 6379/tcp redis" in out


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"scan.bogus": 1}, "scan.bogus"),
        ({"scan.allowed_networks": ["127.44.0.0/33"]}, "scan.allowed_networks"),
        ({"scan.ports": [{"port": 0, "service": "x"}]}, "scan.ports[0].port"),
        ({"scan.ports": [{"port": 70000, "service": "x"}]}, "scan.ports[0].port"),
        ({"schedule.cron": "61 * * * *"}, "schedule.cron"),
        ({"inventory.static_file": "missing.yaml"}, "missing.yaml: file not found"),
        ({"scan.allowed_networks": ["127.44.0.0/30"]}, "targets[2]: 127.44.0.12 (cache-1)"),
    ],
)
async def test_bad_config_exits_2_naming_the_key_and_scans_nothing(
    cloud: Cloud, changes: dict[str, Any], key: str
) -> None:
    code, out, err = await cloud.goalkeeper("scan", config=cloud.config(**changes))
    assert code == 2, (out, err)
    assert key in err
    assert out == ""
    assert "nmap" not in err  # the scanner was never started
    assert cloud.smtp.messages == [] and cloud.telegram.messages == []


async def test_empty_allowed_networks_refuses_to_scan(cloud: Cloud) -> None:
    config = cloud.config(**{"scan.allowed_networks": []})
    (cloud.tmp / "inventory.yaml").write_text("targets: []\n")
    code, _, err = await cloud.goalkeeper("scan", config=config)
    assert code == 2
    assert "scan.allowed_networks is empty" in err


async def test_check_config_redacts_secrets(cloud: Cloud) -> None:
    code, out, err = await cloud.goalkeeper("check-config", config=cloud.config())
    assert code == 0, err
    assert cloud.telegram.token not in out + err
    printed = yaml.safe_load(out)
    assert printed["notify"]["telegram"]["token"] == "***"


async def test_findings_command_reads_the_store(cloud: Cloud) -> None:
    config = cloud.config()
    code, _, err = await cloud.goalkeeper("scan", config=config)
    assert code == 0, err
    code, out, err = await cloud.goalkeeper("findings", "--json", config=config)
    assert code == 0, err
    rows = json.loads(out)
    assert sorted((r["address"], r["port"]) for r in rows) == sorted(
        (a, p) for a, p in OPEN if a != "127.44.0.15"
    )
    assert {r["status"] for r in rows} == {"open"}
    assert {r["times_notified"] for r in rows} == {1}
    code, out, _ = await cloud.goalkeeper("findings", config=config)
    assert code == 0
    assert out.splitlines()[0].split() == [
        "ADDRESS",
        "PORT",
        "SERVICE",
        "OWNER",
        "FIRST",
        "SEEN",
        "LAST",
        "SEEN",
        "STATUS",
        "MAILED",
    ]
    assert "NOT FOUND (lost-project)" in out


async def test_a_port_off_the_list_is_unmonitored_never_thanked_for(cloud: Cloud) -> None:
    """Nothing false (no port called fixed that was not scanned): every listener keeps running
    while the list shrinks."""
    code, _, err = await cloud.goalkeeper("scan", config=cloud.config())
    assert code == 0, err
    mailed = len(cloud.smtp.messages)

    # 9200 off the list, beta's cache-1 excluded: neither was scanned, so neither is closed.
    shrunk = cloud.config(**{
        "scan.ports": [p for p in PORTS if p["port"] != 9200],
        "scan.exclude": ["127.44.0.15", "127.44.0.12"],
    })  # fmt: skip
    code, out, err = await cloud.goalkeeper("scan", "--json", config=shrunk)
    assert code == 0, err
    assert len(cloud.smtp.messages) == mailed  # no thank-you, and no reminder due yet
    report = json.loads(out)
    assert report["resolved"] == []
    assert {(f["address"], f["port"]): f["unmonitored_reason"] for f in report["unmonitored"]} == {
        ("127.44.0.11", 9200): "port no longer on the scan list",
        ("127.44.0.12", 11211): "address out of scope (in scan.exclude)",
    }
    summary = cloud.telegram.messages[-1].plain
    assert "No longer monitored: 2" in summary and "port no longer on the scan list" in summary

    code, out, err = await cloud.goalkeeper("findings", "--json", config=shrunk)
    assert code == 0, err
    rows = {(r["address"], r["port"]): r for r in json.loads(out)}
    assert len(rows) == 5  # nothing was resolved or dropped
    assert rows[("127.44.0.11", 9200)]["status"] == "unmonitored"
    assert rows[("127.44.0.11", 9200)]["unmonitored_reason"] == "port no longer on the scan list"
    assert rows[("127.44.0.11", 9200)]["resolved_at"] is None
    assert rows[("127.44.0.12", 11211)]["status"] == "unmonitored"
    assert rows[("127.44.0.10", 6379)]["status"] == "open"
    code, out, _ = await cloud.goalkeeper("findings", config=shrunk)
    assert "unmonitored (port no longer on the scan list)" in out
    code, out, err = await cloud.goalkeeper("scan", "--dry-run", config=shrunk)
    assert code == 0, err
    assert (
        "NO LONGER MONITORED 127.44.0.11 9200/tcp elasticsearch: port no longer on the scan list"
        in out
    )
    assert "No longer monitored: 2" in out  # the summary that would be posted

    # Back on the list and still listening: open again, not new, and no second "new" mail.
    code, out, err = await cloud.goalkeeper("scan", "--json", config=cloud.config())
    assert code == 0, err
    report = json.loads(out)
    assert report["unmonitored"] == [] and report["resolved"] == []
    statuses = {(f["address"], f["port"]): f["status"] for f in report["findings"]}
    assert statuses[("127.44.0.11", 9200)] == statuses[("127.44.0.12", 11211)] == "open"
    assert len(cloud.smtp.messages) == mailed
    assert not any("thank you" in plain(m) for m in cloud.smtp.messages)


async def test_a_port_scanned_and_found_closed_is_thanked_for_by_what_closed(
    cloud: Cloud,
) -> None:
    mysql = [(ip_address("127.44.0.14"), 3306, Transport.TCP)]
    async with PortListeners(mysql):
        code, _, err = await cloud.goalkeeper("scan", config=cloud.config())
        assert code == 0, err
    mailed = len(cloud.smtp.messages)

    code, out, err = await cloud.goalkeeper("scan", "--json", config=cloud.config())
    assert code == 0, err
    (thanks,) = cloud.smtp.messages[mailed:]
    assert thanks.rcpt_tos == ("ops@beta.example",)
    assert thanks.message["Subject"] == "Closed: 1 port on 1 server"
    assert "Closed since our last report (thank you)" in plain(thanks)
    assert "dangerous" not in plain(thanks)
    report = json.loads(out)
    assert [(f["address"], f["port"]) for f in report["resolved"]] == [("127.44.0.14", 3306)]


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="a UDP scan needs raw sockets: run as root (CI does)")
async def test_udp_skipped_without_privileges_is_unmonitored_not_closed(cloud: Cloud) -> None:
    dns = {"port": 53, "protocol": "udp", "service": "dns"}
    udp = [(ip_address("127.44.0.14"), 53, Transport.UDP)]
    async with PortListeners(udp):  # answers every datagram: nmap calls it open
        # Coverage is the point here: the listener's reply is no DNS answer, so verification
        # (which drops a UDP port whose service never answered) is off for this scan.
        code, out, err = await cloud.goalkeeper("scan", "--json", config=cloud.config(**{
            "scan.ports": [*PORTS, dns], "scan.privileged": True, "scan.verify.enabled": False,
        }))  # fmt: skip
        assert code == 0, err
        assert ("127.44.0.14", 53, "udp") in {
            (f["address"], f["port"], f["protocol"]) for f in json.loads(out)["findings"]
        }
        mailed = len(cloud.smtp.messages)

        unprivileged = cloud.config(**{"scan.ports": [*PORTS, dns], "scan.privileged": False})
        code, out, err = await cloud.goalkeeper("scan", "--json", config=unprivileged)
        assert code == 0, err
    assert len(cloud.smtp.messages) == mailed
    report = json.loads(out)
    assert report["resolved"] == []
    assert [(f["port"], f["unmonitored_reason"]) for f in report["unmonitored"]] == [
        (53, "UDP not scanned (scan.privileged: false)")
    ]


# A directory that cannot be made (its parent is a file), and a host that never resolves (.invalid
# is reserved, RFC 2606): neither is reached over the network. The password must not be printed.
BAD_STATE_URLS = [
    "sqlite+aiosqlite:///{tmp}/inventory.yaml/state.db",
    "postgresql+asyncpg://goalkeeper:Sup3rSecretPw@nohost.invalid/goalkeeper",
]


@pytest.mark.parametrize("command", ["run", "scan", "findings"])
@pytest.mark.parametrize("url", BAD_STATE_URLS)
async def test_a_state_store_that_cannot_be_opened_is_one_line_and_exit_1(
    cloud: Cloud, command: str, url: str
) -> None:
    config = cloud.config(**{"http.host": "127.0.0.1", "http.port": free_port()})
    state_url = url.format(tmp=cloud.tmp)
    code, out, err = await cloud.goalkeeper(
        command, config=config, env={"GOALKEEPER_STATE__URL": state_url}
    )
    # findings is read-only: a SQLite store that is not there is a configuration error (2).
    read_only_miss = command == "findings" and state_url.startswith("sqlite")
    assert code == (2 if read_only_miss else 1), err
    lines = err.splitlines()
    assert len(lines) == 1, err
    start = "goalkeeper: no state store at " if read_only_miss else "goalkeeper: cannot "
    assert lines[0].startswith(start) and "state" in lines[0]
    assert ("inventory.yaml" in lines[0]) or (
        "nohost.invalid" in lines[0] and "gaierror" in lines[0]
    )
    assert "Sup3rSecretPw" not in out + err
    assert cloud.smtp.messages == [] and cloud.telegram.messages == []


async def test_a_failing_tick_exits_1_and_logs_its_traceback(cloud: Cloud) -> None:
    # OpenStack with no credentials at all: the inventory is unavailable, and so the tick fails.
    config = cloud.config(**{"inventory.source": "openstack"})
    clean = {k: "" for k in os.environ if k.startswith("OS_")}
    code, out, err = await cloud.goalkeeper("scan", config=config, env=clean)
    assert code == 1, err
    failed = [json.loads(line) for line in err.splitlines() if '"tick failed"' in line]
    assert len(failed) == 1, err
    trace = failed[0]["exception"]
    assert trace.startswith("Traceback (most recent call last):"), trace
    assert "InventoryUnavailable" in trace
    assert "goalkeeper: the tick failed: inventory unavailable" in err
    assert out == ""


def no_smtp_config(cloud: Cloud) -> Path:
    """Mail to a port where nothing listens, retried at once (no backoff) so the test is quick."""
    return cloud.config(
        **{"notify.email.port": free_port(), "notify.email.retry_backoff": 0,
           "notify.retry_backoff": 0}
    )  # fmt: skip


async def test_undelivered_mail_exits_3_and_stays_in_the_outbox(cloud: Cloud) -> None:
    config = no_smtp_config(cloud)
    code, out, err = await cloud.goalkeeper("scan", "--json", config=config)
    assert code == 3, err
    report = json.loads(out)
    assert report["findings"]  # the tick itself did its job
    assert "not delivered: 3 of 3 mails;" in err and "outbox" in err
    assert len(cloud.telegram.messages) == 1  # the summary went out; only mail failed
    # Kept, not lost: with SMTP back, the next scan sends them first.
    code, _, err = await cloud.goalkeeper("scan", config=cloud.config())
    assert code == 0, err
    assert len(cloud.smtp.messages) == 3


async def test_smtp_answering_4xx_exits_3(cloud: Cloud) -> None:
    cloud.smtp.fail_next(451, count=100)
    config = cloud.config(**{"notify.email.retry_backoff": 0, "notify.retry_backoff": 0})
    code, _, err = await cloud.goalkeeper("scan", config=config)
    assert code == 3, err
    assert "not delivered: 3 of 3 mails;" in err
    assert cloud.smtp.messages == []


async def test_a_dry_run_does_not_count_unsent_mail_as_undelivered(cloud: Cloud) -> None:
    code, out, err = await cloud.goalkeeper("scan", "--dry-run", config=no_smtp_config(cloud))
    assert code == 0, err
    assert "not delivered" not in err
    assert "mail to admin@acme.example" in out


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "3 done, but some messages were not delivered" in text


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"address": "fd00:44::10", "server_name": "db-1", "project_id": "p-acme"},
            "targets[6]: fd00:44::10 (db-1) is outside scan.allowed_networks",
        ),
        (
            {"network": "fd00:44::/64", "server_name": "pool"},
            "targets[6]: fd00:44::/64 has 18446744073709551616 addresses",
        ),
    ],
)
async def test_an_ipv6_static_entry_outside_or_too_large_exits_2_naming_it(
    cloud: Cloud, entry: dict[str, str], expected: str
) -> None:
    # IPv6 entries are targets, held to allowed_networks like IPv4; a /64 is never expanded.
    config = cloud.config()  # writes the fixture's inventory, which this one replaces
    (cloud.tmp / "inventory.yaml").write_text(yaml.safe_dump({"targets": [*INVENTORY, entry]}))
    code, out, err = await cloud.goalkeeper("scan", "--json", config=config)
    assert code == 2, (out, err)
    assert expected in " ".join(err.split())
    assert cloud.smtp.messages == [] and cloud.telegram.messages == []


def mail(*, delivered: bool, queued: bool = False) -> MailOutcome:
    error = None if delivered else "not sent yet: will be retried"
    to = "a@customer.example"
    return MailOutcome(to, to, "A", 1, "<id>", delivered, error, queued=queued)


@pytest.mark.parametrize(
    ("mails", "summary", "dry_run", "expected"),
    [
        ((mail(delivered=True),), True, False, None),
        ((mail(delivered=True),), None, False, None),  # no chat configured
        ((mail(delivered=False), mail(delivered=True)), True, False, "1 of 2 mails"),
        ((mail(delivered=True),), False, False, "the Telegram summary"),
        ((mail(delivered=False),), False, False, "1 of 1 mail and the Telegram summary"),
        ((mail(delivered=False),), None, True, None),  # a dry run sends nothing on purpose
        ((mail(delivered=False, queued=True),), None, False, None),  # handed on, not failed
    ],
)
def test_what_counts_as_undelivered(
    mails: tuple[MailOutcome, ...], summary: bool | None, dry_run: bool, expected: str | None
) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    report = TickReport(
        run_id="r", environment="prod", started_at=now, finished_at=now, inventory_source="s",
        inventory_age_seconds=0, inventory_stale_reason=None, targets=1, refused=(), excluded=0,
        hosts_scanned=1, not_scanned={}, findings=(), mails=mails, dry_run=dry_run,
        summary_delivered=summary,
    )  # fmt: skip
    assert undelivered(report) == expected
