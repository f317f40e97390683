"""The run summary for the provider's Telegram channel, in Telegram's HTML subset.

Pure: a TickReport in, text out. Every value that came from outside (names, reasons, addresses)
is escaped, and made one capped line the way a mail header is (`_outside`): a server named
"a\nSubject: x" forges no line, U+202E turns no text around, and a 100 KB name costs one short
line, not a hundred messages. Splitting into messages of Telegram's size is telegram.py's job.
"""

from __future__ import annotations

import html
import ipaddress
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from goalkeeper.model import Finding, FindingStatus, Grade, TickReport
from goalkeeper.notify.render import header_text
from goalkeeper.rootcause import CAUSE_KINDS, Cause

NAME_LIMIT = 64  # a server or project name, a mail address
TEXT_LIMIT = 200  # an error, a reason, a warning
CAUSE_LIST_LIMIT = 20  # findings of unknown cause listed by address and port


def render_summary(
    report: TickReport, *, top_hosts: int | None = None, detail: str = "full"
) -> str:
    """The tick in Telegram-HTML. Every exposed host is listed unless `top_hosts` caps it;
    `detail="counts"` (notify.telegram.detail) names no customer's address, server, project or
    mail address anywhere: numbers only, for a chat that is not private enough for them."""
    counts = detail == "counts"
    e = html.escape
    lines = [f"<b>Goalkeeper [{e(report.environment)}]</b> run <code>{e(report.run_id)}</code>"]
    if report.dry_run:
        lines.append("<i>Dry run: nothing was sent.</i>")
    lines.append(
        f"Targets: {report.targets} · scanned: {report.hosts_scanned}"
        f" · <b>not scanned: {len(report.not_scanned)}</b>"
    )
    if report.not_scanned:
        lines.append("Why not scanned: " + e(_tally(report.not_scanned.values())))
    lines.extend(_region_lines(report))
    lines.append(f"Refused (outside allowed_networks): {len(report.refused)}")
    lines.append(f"Excluded: {report.excluded}")
    if report.failed_batches:
        lines.append(f"<b>Failed nmap batches: {report.failed_batches}</b>")
    new = sum(1 for f in report.findings if f.status == FindingStatus.NEW)
    accepted = f", accepted: {len(report.acknowledged)}" if report.acknowledged else ""
    lines.append(
        f"<b>Open findings: {len(report.findings)}</b> (new: {new},"
        f" resolved: {len(report.resolved)}{accepted})"
    )
    for service, count in sorted(Counter(f.service for f in report.findings).items()):
        lines.append(f"  {_outside(service, NAME_LIMIT)}: {count}")
    lines.extend(_grade_line(report.findings))
    lines.extend(_cause_lines(report.findings, counts_only=counts))
    # Advisories, not findings (DESIGN §8): a rule open to the world where nothing answered.
    lines.append(f"Latent exposures: {report.latent_exposures}")
    unreadable = {f.target.server_id or str(f.address) for f in report.findings
                  if f.target.allow_problem}  # fmt: skip
    if unreadable:  # told to each customer in their mail; staff see how many
        lines.append(f"Servers with an unreadable goalkeeper.allow: {len(unreadable)}")
    if report.unmonitored:  # open when last seen, not scanned now: not fixed, not forgotten
        reasons = _tally(f.unmonitored_reason or "unknown" for f in report.unmonitored)
        lines.append(f"<b>No longer monitored: {len(report.unmonitored)}</b> ({e(reasons)})")
    lines.extend(_mail_lines(report, counts=counts))
    lines.append(
        f"Inventory: {e(report.inventory_source)}, {_age(report.inventory_age_seconds)} old"
    )
    if report.inventory_stale_reason:
        lines.append(f"⚠️ <b>Inventory is stale</b>: {_outside(report.inventory_stale_reason)}")
    lines.extend(_owner_lookup(report))
    lines.extend(f"⚠️ {_outside(warning)}" for warning in report.warnings)
    hosts = _exposed_hosts(report.findings)
    lines.append(f"<b>Exposed hosts: {len(hosts)}</b>")
    shown = hosts if top_hosts is None else hosts[:top_hosts]
    if counts:
        return "\n".join(lines)
    lines.extend(shown)
    if len(shown) < len(hosts):
        lines.append(f"<i>… and {len(hosts) - len(shown)} more</i>")
    return "\n".join(lines)


def _grade_line(findings: Sequence[Finding]) -> list[str]:
    """Findings per verification grade, worst first (DESIGN §7); every grade, zeros too."""
    if not findings:
        return []
    graded = Counter(f.grade for f in findings)
    words = [f"{grade}: {graded[grade]}" for grade in Grade]
    if graded[None]:
        words.append(f"not verified: {graded[None]}")
    return ["Grades: " + " · ".join(words)]


def _cause_lines(findings: Sequence[Finding], *, counts_only: bool) -> list[str]:
    """Findings per cause (DESIGN §8), and each `unknown` one for the staff to trace by hand:
    no rule was found that lets it through, so the customer's mail gives no command."""
    if not findings:
        return []
    kinds = [Cause.from_json(f.cause).kind for f in findings]
    counts = Counter(kinds)
    lines = ["Causes: " + " · ".join(f"{kind}: {counts[kind]}" for kind in CAUSE_KINDS)]
    unknown = sorted(
        (f for f, kind in zip(findings, kinds, strict=True) if kind == "unknown"),
        key=lambda f: (_address_order(str(f.address)), str(f.protocol), f.port),
    )
    if unknown and counts_only:
        lines.append(f"⚠️ <b>Cause unknown, for staff to look at: {len(unknown)}</b>")
    elif unknown:
        shown = ", ".join(
            f"<code>{html.escape(str(f.address))}</code> {f.port}/{f.protocol}"
            for f in unknown[:CAUSE_LIST_LIMIT]
        )
        more = len(unknown) - CAUSE_LIST_LIMIT
        tail = f" <i>… and {more} more</i>" if more > 0 else ""
        lines.append(f"⚠️ <b>Cause unknown, for staff to look at: {len(unknown)}</b>: {shown}{tail}")
    return lines


def _owner_lookup(report: TickReport) -> list[str]:
    lookup = report.owner_lookup
    if lookup is None:
        return []
    if lookup.incident:
        return [f"⚠️ <b>Owner lookup incident</b>: {html.escape(lookup.describe())}"]
    return [f"Owners: {html.escape(lookup.describe())}"]


def _exposed_hosts(findings: Iterable[Finding]) -> list[str]:
    by_address: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_address[str(finding.address)].append(finding)
    lines = []
    for address in sorted(by_address, key=_address_order):
        members = sorted(by_address[address], key=lambda f: (f.protocol, f.port))
        target = members[0].target
        names = (target.server_name, target.project_name)
        where = " · ".join(_outside(name, NAME_LIMIT) for name in names if name)
        ports = ", ".join(
            f"{f.port}/{f.protocol} {_outside(f.service, NAME_LIMIT)}" for f in members
        )
        lines.append(f"<code>{html.escape(address)}</code> {where}: {ports}")
    return lines


def _mail_lines(report: TickReport, *, counts: bool) -> list[str]:
    """Who was mailed, whose owner is unknown, and what was not delivered."""
    lines: list[str] = []
    delivered = sum(1 for m in report.mails if m.delivered)
    queued = sum(1 for m in report.mails if m.queued)
    failed = [m for m in report.mails if not m.delivered and not m.queued]
    not_found = sum(1 for m in report.mails if m.intended is None)
    if queued:
        lines.append(f"Owners to mail: {queued} (owner not found: {not_found})")
    else:
        lines.append(f"Owners mailed: {delivered} (owner not found: {not_found})")
    if report.owners_not_found and counts:
        lines.append(f"Projects without a known owner: {len(report.owners_not_found)}")
    elif report.owners_not_found:
        projects = ", ".join(_outside(p) for p in report.owners_not_found)
        lines.append(f"Projects without a known owner: {len(report.owners_not_found)}: {projects}")
    if failed or not queued:
        lines.append(f"Mail failures: {len(failed)}")
        if not counts:  # a recipient is a customer's address
            lines.extend(
                f"  {_outside(m.recipient)}: {_outside(m.error or 'not delivered')}" for m in failed
            )
    if report.notification_failures:
        lines.append(
            f"<b>Notifications given up on since the last run: "
            f"{len(report.notification_failures)}</b>"
        )
        if not counts:
            lines.extend(f"  {_outside(f)}" for f in report.notification_failures)
    return lines


def _region_lines(report: TickReport) -> list[str]:
    """Targets by region, and each region not read with why; nothing for one unnamed region."""
    by_region = sorted({*report.targets_by_region, *report.regions_down})
    if by_region in ([], [""]):
        return []
    counts = (
        f"{html.escape(r or '(default)')} {report.targets_by_region.get(r, 0)}" for r in by_region
    )
    lines = ["By region: " + ", ".join(counts)]
    for region, why in sorted(report.regions_down.items()):
        lines.append(f"⚠️ <b>Region {html.escape(region)} not read</b>: {_outside(why)}")
    return lines


def _outside(value: str, limit: int = TEXT_LIMIT) -> str:
    """A value from outside as one line of at most `limit` characters, escaped for Telegram."""
    return html.escape(header_text(value, limit=limit))


def _address_order(address: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(address)
    return (parsed.version, int(parsed))


def _tally(reasons: Iterable[str], *, limit: int = 5) -> str:
    counts = Counter(header_text(reason, limit=80) for reason in reasons).most_common()
    shown = [f"{reason} ({count})" for reason, count in counts[:limit]]
    rest = sum(count for _, count in counts[limit:])
    if rest:
        shown.append(f"other reasons ({rest})")
    return "; ".join(shown)


def _age(seconds: float) -> str:
    minutes = int(max(seconds, 0) // 60)
    if minutes < 1:
        return f"{int(max(seconds, 0))} s"
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours < 48 else f"{hours // 24} d {hours % 24} h"
