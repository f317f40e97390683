"""One bad owner address never stops a tick: the real tick against the simulated cloud.

Billing holds, for one client, an address with an invisible character (as copied from a web
form). Before the address check, that mail raised inside the outbox transaction and the whole
tick failed: nobody got a report and no summary was posted. Now every other owner gets theirs,
and that client's report goes to ops as NOT FOUND with the reason, which the summary repeats.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from goalkeeper.scanning.catalog import load_catalog
from goalkeeper_sim.demo import OPS, sim_tick
from goalkeeper_sim.world import Client, World, build_world


def world_with_a_bad_address(email: str) -> tuple[World, Client, set[str]]:
    """The world, the client whose address is now `email`, and the other owners' addresses."""
    world = build_world(
        5,
        projects=8,
        servers_per_project=3,
        unknown_project_share=0,
        open_share=0.8,
        unassociated_floating_ips=0,
        services=[p for p in load_catalog().ports if p.protocol == "tcp" and p.port >= 1024],
    )
    owners = {
        client.id: client
        for server in world.public_addresses().values()
        if server.services and (client := world.client_of(server.project_id)) is not None
    }
    assert len(owners) >= 2, "the seed must give at least two owners with open ports"
    bad = owners[min(owners)]
    others = {c.email for c in owners.values() if c.id != bad.id}
    clients = tuple(
        c if c.id != bad.id else dataclasses.replace(c, email=email) for c in world.clients
    )
    return dataclasses.replace(world, clients=clients), bad, others


@pytest.mark.parametrize(
    ("email", "shown"),
    [
        ("ma\u202elory@customer.example", "RIGHT-TO-LEFT OVERRIDE"),
        ("mal\u00adlory@customer.example", "SOFT HYPHEN"),
        ("mal\u200blory@customer.example", "ZERO WIDTH SPACE"),
        ("mallory@customer.example\x00", "U+0000"),
    ],
)
async def test_a_tick_with_one_unusable_billing_address_mails_everyone_else(
    tmp_path: Path, email: str, shown: str
) -> None:
    world, bad, others = world_with_a_bad_address(email)
    tick = await sim_tick(world, tmp_path)
    report, smtp, telegram = tick.report, tick.smtp, tick.telegram

    assert all(mail.delivered for mail in report.mails), report.mails
    mailed = {mail.rcpt_tos[0]: mail.message for mail in smtp.messages}
    assert others <= set(mailed), "every other owner got their report"
    assert not any("mallory" in rcpt or "lory" in rcpt for rcpt in mailed)
    to_ops = [m.message for m in smtp.messages if m.rcpt_tos == (OPS,)]
    assert to_ops, "the bad client's report went to ops"
    for message in to_ops:  # one NOT FOUND report per project of that client
        assert message["X-Goalkeeper-Owner"] == "NOT FOUND"
        body = message.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert "OWNER NOT FOUND" in text
        assert f"Billing's e-mail address for {bad.company} cannot be used" in text
        assert repr(email) in text and shown in text
    assert len(report.owners_not_found) == len(to_ops)
    assert all(repr(email) in p and shown in p for p in report.owners_not_found)
    (summary,) = telegram.messages
    assert repr(email) in summary.plain
    assert report.summary_delivered is True
