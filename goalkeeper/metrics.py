"""The Prometheus registry and every metric Goalkeeper exports.

One explicit registry (not the process-global default), so tests can build a fresh one and the
`/metrics` handler serves exactly these series. Labelled series that dashboards and alerts rely
on are created at start, so they read zero before the first tick. No secret is ever a label.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from goalkeeper import version
from goalkeeper.model import (
    UNMONITORED_REASONS,
    OwnerLookup,
    OwnerLookupState,
    unmonitored_kind,
)

TICK_OUTCOMES = ("success", "failure", "cancelled")
CHANNELS = ("email", "telegram")
NOTIFICATION_OUTCOMES = ("sent", "retried", "failed")
RELOAD_OUTCOMES = ("success", "failure")
# goalkeeper.rootcause.CAUSE_KINDS, which this layer may not import (a test keeps them equal).
CAUSE_KINDS = ("world_rule", "port_security_disabled", "unknown")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No `<counter>_created` series: they double the exposition and no dashboard reads them.
        # The library's switch is process-wide; this is where every registry is built.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it bare
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ticks = Counter("goalkeeper_ticks", "Ticks run, by outcome.", ["outcome"], registry=r)
        self.tick_duration = Histogram(
            "goalkeeper_tick_duration_seconds",
            "Wall time of a tick: inventory, scan, findings, commit to the outbox and handing its "
            "messages to delivery; the daemon's tick does not wait for them to be sent (see "
            "goalkeeper_delivery_duration_seconds).",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.last_success = Gauge(
            "goalkeeper_last_tick_success_timestamp_seconds",
            "Unix time at which the last successful tick finished.",
            registry=r,
        )
        self.targets = Gauge(
            "goalkeeper_targets", "Addresses in scope in the last tick.", registry=r
        )
        # Bounded: region names come from inventory.openstack.regions (config.MAX_REGIONS).
        self.targets_by_region = Gauge(
            "goalkeeper_targets_by_region",
            'Addresses in scope in the last tick, by OpenStack region ("": a single region or '
            "a static inventory).",
            ["region"],
            registry=r,
        )
        self.region_up = Gauge(
            "goalkeeper_region_up",
            "1 when the last tick read the region fresh, 0 when it failed (its targets came from "
            "its last good copy, or were not scanned).",
            ["region"],
            registry=r,
        )
        self.hosts_scanned = Counter(
            "goalkeeper_hosts_scanned", "Hosts nmap scanned to the end.", registry=r
        )
        self.hosts_not_scanned = Counter(
            "goalkeeper_hosts_not_scanned",
            "Hosts that could not be scanned (timed out, nmap failed); never counted clean.",
            registry=r,
        )
        self.open_findings = Gauge(
            "goalkeeper_open_findings",
            "Open findings after the last tick, by service and verification grade (DESIGN §7: "
            "unauthenticated, reachable, unconfirmed; none when not verified).",
            ["service", "port", "protocol", "grade"],
            registry=r,
        )
        self.open_findings_by_cause = Gauge(
            "goalkeeper_open_findings_by_cause",
            "Open findings after the last tick, by what lets them through (DESIGN §8): "
            "world_rule, port_security_disabled, or unknown (for the staff to trace).",
            ["cause"],
            registry=r,
        )
        self.unmonitored_findings = Gauge(
            "goalkeeper_unmonitored_findings",
            "Findings open when last seen that the last tick did not scan (port off the list, "
            "protocol or host not scanned, out of scope): not in goalkeeper_open_findings.",
            ["reason"],
            registry=r,
        )
        self.acknowledged_findings = Gauge(
            "goalkeeper_acknowledged_findings",
            "Open findings after the last tick that an exception covers (DESIGN §9), by whose "
            "exception (customer or provider): counted in goalkeeper_open_findings, never mailed.",
            ["source"],
            registry=r,
        )
        self.notifications = Counter(
            "goalkeeper_notifications",
            "Notification attempts, by channel and outcome.",
            ["channel", "outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "goalkeeper_notification_queue_depth",
            "Messages waiting to be sent, by channel.",
            ["channel"],
            registry=r,
        )
        self.inventory_age = Gauge(
            "goalkeeper_inventory_age_seconds",
            "Age of the inventory the last tick used (grows when the last good copy is reused).",
            registry=r,
        )
        self.config_reloads = Counter(
            "goalkeeper_config_reloads",
            "Config reloads on SIGHUP, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.owners_unresolved = Gauge(
            "goalkeeper_owners_unresolved",
            "Projects with exposed hosts whose owner billing does not know (NOT FOUND).",
            registry=r,
        )
        self.owner_check_failures = Counter(
            "goalkeeper_owner_check_failures",
            "Send-time owner checks that could not be made (inventory unavailable); the mail "
            "waits and the check is retried with backoff.",
            registry=r,
        )
        self.relay_outages = Counter(
            "goalkeeper_relay_outages",
            "Passes stopped because the mail relay refused every recipient the same way; the "
            "messages were kept pending.",
            registry=r,
        )
        self.owner_resolved_share = Gauge(
            "goalkeeper_owner_resolved_share",
            "Share (0..1) of the inventory's projects whose owner billing resolved in the last "
            "refresh; 1 with no projects or a static inventory, 0 with owners off or unset.",
            registry=r,
        )
        self.owner_lookup_incident = Gauge(
            "goalkeeper_owner_lookup_incident",
            "1 when the last refresh's owner lookup was an incident: Fleio not configured, or "
            "owners resolved for none or less than inventory.fleio.min_resolved_share of the "
            "projects; 0 otherwise, also when owners are off by choice.",
            registry=r,
        )
        self.delivery_duration = Histogram(
            "goalkeeper_delivery_duration_seconds",
            "Time from a message's commit to the outbox to its delivery (relay or Telegram "
            "accepted it), by channel: queueing, owner checks and retries included.",
            ["channel"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
            registry=r,
        )
        self._store_series()
        self._standard_series()
        self._initialise()

    def _store_series(self) -> None:
        """Series read from the state store (goalkeeper.storewatch), so a restart keeps them.

        The counters above start from zero in every process; these say what the store holds.
        """
        r = self.registry
        self.outbox_pending = Gauge(
            "goalkeeper_outbox_pending",
            "Messages in the state store still to be sent, by channel.",
            ["channel"],
            registry=r,
        )
        self.outbox_oldest_pending_age = Gauge(
            "goalkeeper_outbox_oldest_pending_age_seconds",
            "Age of the oldest message still to be sent, by channel; 0 when none waits.",
            ["channel"],
            registry=r,
        )
        self.outbox_failed = Gauge(
            "goalkeeper_outbox_failed",
            "Messages in the state store given up on (failed for good), by channel.",
            ["channel"],
            registry=r,
        )
        self.state_store_up = Gauge(
            "goalkeeper_state_store_up",
            "1 when the last check wrote to the state store and read it back, else 0.",
            registry=r,
        )
        for channel in CHANNELS:
            for gauge in (self.outbox_pending, self.outbox_oldest_pending_age, self.outbox_failed):
                gauge.labels(channel=channel)

    def _standard_series(self) -> None:
        """The names stock dashboards and alerts look for: process_*, python_*, *_build_info."""
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, _cpu_seconds_total, ...
        PlatformCollector(registry=r)  # python_info
        GCCollector(registry=r)  # python_gc_*
        # The nmap version is not here: learning it means running nmap, which a scrape must not.
        Info("goalkeeper_build", "The running Goalkeeper and its Python.", registry=r).info(
            {"version": version(), "python": platform.python_version()}
        )

    def _initialise(self) -> None:
        for outcome in TICK_OUTCOMES:
            self.ticks.labels(outcome=outcome)
        for channel in CHANNELS:
            self.queue_depth.labels(channel=channel)
            for outcome in NOTIFICATION_OUTCOMES:
                self.notifications.labels(channel=channel, outcome=outcome)
        for channel in CHANNELS:
            self.delivery_duration.labels(channel=channel)
        for outcome in RELOAD_OUTCOMES:
            self.config_reloads.labels(outcome=outcome)
        self.set_unmonitored_findings()
        self.set_acknowledged_findings()
        self.set_open_findings_by_cause()

    def set_regions(self, targets: Mapping[str, int], down: Mapping[str, str]) -> None:
        """The per-region gauges after a tick: targets in scope, and whether it was read."""
        self.targets_by_region.clear()
        self.region_up.clear()
        for region in {*targets, *down}:
            self.targets_by_region.labels(region=region).set(targets.get(region, 0))
            self.region_up.labels(region=region).set(0 if region in down else 1)

    def set_owner_lookup(self, lookup: OwnerLookup | None) -> None:
        """The owner lookup gauges after a tick; None is a source that carries its own owners."""
        share, incident = owner_gauges(lookup)
        self.owner_resolved_share.set(share)
        self.owner_lookup_incident.set(1 if incident else 0)

    def set_open_findings(self, counts: Iterable[tuple[str, int, str, str, int]]) -> None:
        """Replace the open-findings gauge with (service, port, protocol, grade, count) rows."""
        self.open_findings.clear()
        for service, port, protocol, grade, count in counts:
            self.open_findings.labels(
                service=service, port=str(port), protocol=protocol, grade=grade
            ).set(count)

    def set_open_findings_by_cause(self, causes: Mapping[str, int] | None = None) -> None:
        """Every cause's count of open findings, zero for those without any."""
        for kind in CAUSE_KINDS:
            self.open_findings_by_cause.labels(cause=kind).set((causes or {}).get(kind, 0))

    def set_acknowledged_findings(self, sources: Mapping[str, int] | None = None) -> None:
        """Each exception source's count of acknowledged findings, zero for those without."""
        for source in EXCEPTION_SOURCES:
            self.acknowledged_findings.labels(source=source).set((sources or {}).get(source, 0))

    def set_unmonitored_findings(self, reasons: Mapping[str, int] | None = None) -> None:
        """Replace the unmonitored-findings gauge: a count per reason (its detail dropped), and
        zero for every reason without findings, so the series exist before the first tick."""
        self.unmonitored_findings.clear()
        for kind in UNMONITORED_REASONS:
            self.unmonitored_findings.labels(reason=kind).set(0)
        for reason, count in (reasons or {}).items():
            self.unmonitored_findings.labels(reason=unmonitored_kind(reason)).inc(count)


EXCEPTION_SOURCES = ("customer", "provider")


def owner_gauges(lookup: OwnerLookup | None) -> tuple[float, bool]:
    """(resolved share, incident) as the gauges show them, also for the stored tick record."""
    if lookup is None:
        return 1.0, False
    if lookup.state is not OwnerLookupState.ON:
        return 0.0, lookup.incident
    return (1.0 if lookup.share is None else lookup.share), lookup.incident
