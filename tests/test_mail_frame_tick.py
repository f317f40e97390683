"""What frames every mail and the chat post, end to end through a real tick against the
simulated cloud (issue 17): each customer mail says who scans, from where, and when the next
scheduled check is, carries Reply-To, and in production shows no internal label or run id;
`notify.telegram.detail: counts` posts no customer's address, server, project or mail address
to the chat."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from goalkeeper.scanning.catalog import load_catalog
from goalkeeper_sim.demo import sim_tick
from goalkeeper_sim.world import World, build_world


def the_world() -> World:
    return build_world(
        7,
        projects=6,
        servers_per_project=3,
        unknown_project_share=0.2,
        open_share=0.8,
        unassociated_floating_ips=0,
        services=[p for p in load_catalog().ports if p.protocol == "tcp" and p.port >= 1024],
    )


def plain(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


async def test_customer_mails_name_the_scanner_and_carry_no_internal_label(tmp_path: Path) -> None:
    overrides = {
        "notify": {"reply_to": "abuse@provider.example"},
        "schedule": {"cron": "30 5 * * 1", "timezone": "Europe/Berlin"},  # Mondays, 05:30 CET
    }
    now = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # a Wednesday
    tick = await sim_tick(the_world(), tmp_path, overrides=overrides, now=now)
    customers = [m.message for m in tick.smtp.messages if "NOT FOUND" not in m.message["Subject"]]
    not_found = [m.message for m in tick.smtp.messages if "NOT FOUND" in m.message["Subject"]]
    assert customers and not_found, "the seed must give both kinds of mail"
    for message in customers:
        text = plain(message)
        assert "from 127.0.0.1" in text
        assert "About this scan: https://provider.example/security-scan" in text
        assert message["Reply-To"] == "abuse@provider.example"
        assert not message["Subject"].startswith("[prod]")
        assert tick.report.run_id not in text
        assert message["X-Goalkeeper-Run"] == tick.report.run_id
        assert "Next scheduled check: 2026-12-07 05:30 CET" in text
    for message in not_found:
        assert "Reply to this mail" not in plain(message)


async def test_a_counts_only_summary_names_no_customer(tmp_path: Path) -> None:
    world = the_world()
    overrides = {"notify": {"telegram": {"detail": "counts"}}}
    tick = await sim_tick(world, tmp_path, overrides=overrides)
    (summary,) = tick.telegram.messages
    assert tick.report.findings and f"Open findings: {len(tick.report.findings)}" in summary.plain
    names = {s.name for s in world.servers} | {p.name for p in world.projects}
    names |= {c.email for c in world.clients}
    addresses = {str(a) for a in world.public_addresses()}
    leaked = {n for n in names | addresses if n and n in summary.plain}
    assert not leaked, leaked
    (tmp_path / "full").mkdir()
    full = await sim_tick(world, tmp_path / "full")
    assert any(a in full.telegram.messages[0].plain for a in addresses)  # the check can fail
