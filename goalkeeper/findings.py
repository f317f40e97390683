"""Pure logic from scan results to findings, and from findings to one report per recipient.

No I/O and no clock: the tick's time is an argument. Whom a mail goes to is decided here and
only here, so the rules (NOT FOUND to ops, stage and customer-mail-off redirected to ops) are
tested as tables.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from goalkeeper.model import (
    Finding,
    FindingStatus,
    IPAddress,
    LatentAdvice,
    Owner,
    OwnerReport,
    PortSpec,
    ScanResult,
    Target,
    Transport,
)
from goalkeeper.rootcause import LatentExposure, find_cause, latent_advice


def build_findings(
    result: ScanResult,
    targets: Mapping[IPAddress, Target],
    ports: Sequence[PortSpec],
    *,
    now: datetime,
    egress: Sequence[IPAddress] = (),
) -> tuple[Finding, ...]:
    """One finding per open port that was asked for, on an address the inventory knows, with
    its cause (DESIGN §8) from the target's firewall; `egress` is scan.egress_addresses."""
    services = {(p.port, p.protocol): p.service for p in ports}
    findings = []
    for open_port in result.open_ports:
        service = services.get((open_port.port, open_port.protocol))
        target = targets.get(open_port.address)
        if service is None or target is None:
            continue  # not asked for, or not ours: nmap never reports either, but be sure
        findings.append(
            Finding(
                address=open_port.address,
                port=open_port.port,
                protocol=open_port.protocol,
                service=service,
                target=target,
                first_seen=now,
                last_seen=now,
                status=FindingStatus.NEW,
                evidence=open_port.evidence,
                grade=open_port.grade,
                cause=find_cause(
                    open_port.address,
                    open_port.port,
                    open_port.protocol,
                    target.firewall,
                    egress=egress,
                ).to_json(),
            )
        )
    return tuple(sorted(findings, key=_order))


def group_reports(
    findings: Iterable[Finding], *, ops_email: str, redirect: bool
) -> tuple[OwnerReport, ...]:
    """ONE report per owner e-mail; owners billing does not know go to ops, one per project.

    `redirect` (stage, or customer mail off) sends every report to ops, still one per owner so
    each can be forwarded as it is.
    """
    groups: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[_recipient_key(finding)].append(finding)
    reports = []
    # Known owners first, then the NOT FOUND reports for ops; each part in a stable order.
    for key, items in sorted(
        groups.items(), key=lambda kv: (kv[0].startswith("not-found:"), kv[0])
    ):
        owner = items[0].owner
        intended = owner.email if owner.known else None
        reports.append(
            OwnerReport(
                recipient=intended if intended and not redirect else ops_email,
                intended=intended,
                owner=owner,
                findings=tuple(sorted(items, key=_order)),
                redirected=bool(intended) and redirect,
                key=key,
            )
        )
    return tuple(reports)


# Like reminders (goalkeeper.lifecycle.REMINDER_SLACK): due slightly before the whole period,
# so `latent_days: 30` with daily ticks means every 30th tick, not every 31st.
LATENT_SLACK = 0.05


def latent_due(last_told: datetime | None, *, now: datetime, latent_days: float) -> bool:
    """Whether an owner's latent exposures are mailed alone now; 0 days: never alone."""
    if latent_days <= 0:
        return False
    if last_told is None:
        return True
    return now - last_told >= timedelta(days=latent_days) * (1 - LATENT_SLACK)


@dataclass(frozen=True, slots=True)
class LatentPlan:
    """Per recipient key, the latent exposures listed in a report that goes out anyway
    (`attached`) and those mailed alone (`alone`); `told` is every key of either."""

    attached: Mapping[str, tuple[LatentAdvice, ...]] = field(default_factory=dict)
    alone: Mapping[str, tuple[LatentAdvice, ...]] = field(default_factory=dict)

    @property
    def told(self) -> frozenset[str]:
        return frozenset(self.attached) | frozenset(self.alone)


def plan_latent(
    latent: Iterable[LatentExposure],
    *,
    reports: Collection[str],
    told: Mapping[str, datetime],
    now: datetime,
    latent_days: float,
) -> LatentPlan:
    """Which owners hear of their latent exposures this tick: every owner with a report going
    out anyway (`reports`, its recipient keys), and the others when `latent_due`."""
    by_key: dict[str, list[LatentAdvice]] = defaultdict(list)
    for exposure in latent:
        by_key[recipient_key(exposure.target.owner, exposure.target)].append(
            latent_advice(exposure)
        )
    attached, alone = {}, {}
    for key, items in sorted(by_key.items()):
        if key in reports:
            attached[key] = tuple(items)
        elif latent_due(told.get(key), now=now, latent_days=latent_days):
            alone[key] = tuple(items)
    return LatentPlan(attached=attached, alone=alone)


def latent_report(
    key: str, items: Sequence[LatentAdvice], *, ops_email: str, redirect: bool
) -> OwnerReport:
    """A report of latent exposures only, addressed as `group_reports` would address it."""
    owner = items[0].target.owner
    intended = owner.email if owner.known else None
    return OwnerReport(
        recipient=intended if intended and not redirect else ops_email,
        intended=intended,
        owner=owner,
        findings=(),
        redirected=bool(intended) and redirect,
        key=key,
        latent=tuple(items),
    )


UNGRADED = "none"  # the grade label of a finding verification did not grade


def count_by_service(findings: Iterable[Finding]) -> list[tuple[str, int, str, str, int]]:
    """(service, port, protocol, grade, count) rows, most common first."""
    counts = Counter(
        (f.service, f.port, str(f.protocol), str(f.grade or UNGRADED)) for f in findings
    )
    return [(s, p, proto, g, n) for (s, p, proto, g), n in counts.most_common()]


def unresolved_projects(findings: Iterable[Finding]) -> tuple[str, ...]:
    """Projects with exposed hosts and no known owner, as 'name (id)', followed by why billing's
    address cannot be used when it has one."""
    projects: dict[str, tuple[str, str | None]] = {}
    for f in findings:
        if not f.owner.known:
            projects.setdefault(
                f.target.project_id, (f.target.project_name, f.owner.address_problem)
            )
    return tuple(
        (f"{name} ({pid})" if name else pid or "(no project)") + (f": {why}" if why else "")
        for pid, (name, why) in sorted(projects.items())
    )


def recipient_key(owner: Owner, target: Target) -> str:
    """Who a finding is for, logically: the owner's address, or NOT FOUND per project."""
    return owner.mail_key or f"not-found:{target.project_id or target.address}"


def _recipient_key(finding: Finding) -> str:
    return recipient_key(finding.owner, finding.target)


def _order(finding: Finding) -> tuple[int, int, int, int]:
    address = finding.address
    return (
        address.version,
        int(address),
        finding.port,
        0 if finding.protocol == Transport.TCP else 1,
    )
