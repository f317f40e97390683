"""The exposition passes Prometheus's own linter, and labelled series exist before any tick."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from goalkeeper import version
from goalkeeper.metrics import Metrics
from goalkeeper.model import OwnerLookup, OwnerLookupState


def test_series_read_zero_before_the_first_tick() -> None:
    text = generate_latest(Metrics().registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("goalkeeper_ticks_total", (("outcome", "failure"),))] == 0
    assert (
        samples[("goalkeeper_notifications_total", (("channel", "email"), ("outcome", "failed")))]
        == 0
    )
    assert samples[("goalkeeper_notification_queue_depth", (("channel", "telegram"),))] == 0
    assert samples[("goalkeeper_config_reloads_total", (("outcome", "failure"),))] == 0
    for name in ("outbox_pending", "outbox_oldest_pending_age_seconds", "outbox_failed"):
        assert samples[(f"goalkeeper_{name}", (("channel", "email"),))] == 0
        assert samples[(f"goalkeeper_{name}", (("channel", "telegram"),))] == 0
    assert samples[("goalkeeper_state_store_up", ())] == 0  # unknown until the daemon checks
    assert not [name for name, _ in samples if name.endswith("_created")]


def test_standard_collector_names_and_build_info() -> None:
    names = {
        family.name
        for family in text_string_to_metric_families(generate_latest(Metrics().registry).decode())
    }
    # The names stock dashboards and alerts use, not renamed under goalkeeper_.
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= names
    assert "python_gc_collections" in names
    assert not [name for name in names if name.startswith("goalkeeper_process")]
    text = generate_latest(Metrics().registry).decode()
    (info,) = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "goalkeeper_build_info"
    ]
    assert info.labels == {"version": version(), "python": platform.python_version()}
    assert info.value == 1
    assert version() == importlib.metadata.version("goalkeeper")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) absent")
def test_promtool_accepts_the_exposition() -> None:
    metrics = Metrics()
    metrics.set_open_findings(
        [("redis", 6379, "tcp", "unauthenticated", 3), ("memcached", 11211, "udp", "none", 1)]
    )
    metrics.ticks.labels(outcome="success").inc()
    metrics.tick_duration.observe(12.5)
    text = generate_latest(metrics.registry)
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def _value(metrics: Metrics, name: str) -> float:
    text = generate_latest(metrics.registry).decode()
    (value,) = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]
    return value


@pytest.mark.parametrize(
    ("lookup", "share", "incident"),
    [
        (OwnerLookup(OwnerLookupState.ON, projects=8, resolved=6, listed=9), 0.75, 0),
        (OwnerLookup(OwnerLookupState.ON, projects=8, resolved=0, listed=9), 0.0, 1),
        (OwnerLookup(OwnerLookupState.ON, projects=8, resolved=3, min_share=0.5), 0.375, 1),
        (OwnerLookup(OwnerLookupState.ON, projects=8, resolved=3, min_share=0.3), 0.375, 0),
        (OwnerLookup(OwnerLookupState.ON, projects=0), 1.0, 0),
        (OwnerLookup(OwnerLookupState.OFF, projects=8), 0.0, 0),
        (OwnerLookup(OwnerLookupState.UNCONFIGURED, projects=8), 0.0, 1),
        (None, 1.0, 0),  # a static inventory carries its own owners
    ],
)
def test_owner_lookup_gauges(lookup: OwnerLookup | None, share: float, incident: int) -> None:
    metrics = Metrics()
    assert _value(metrics, "goalkeeper_owner_lookup_incident") == 0  # before the first tick
    metrics.set_owner_lookup(lookup)
    assert _value(metrics, "goalkeeper_owner_resolved_share") == share
    assert _value(metrics, "goalkeeper_owner_lookup_incident") == incident


def test_unmonitored_findings_count_by_reason_without_its_detail() -> None:
    metrics = Metrics()

    def series() -> dict[str, float]:
        text = generate_latest(metrics.registry).decode()
        return {
            s.labels["reason"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "goalkeeper_unmonitored_findings"
            for s in family.samples
        }

    assert series() == {
        "port no longer on the scan list": 0,
        "UDP not scanned (scan.privileged: false)": 0,
        "host not scanned": 0,
        "address out of scope": 0,
        "address no longer in the inventory": 0,
    }
    metrics.set_unmonitored_findings(
        {"host not scanned: nmap host timeout": 2, "host not scanned: nmap failed": 1,
         "port no longer on the scan list": 1, "something new": 1}
    )  # fmt: skip
    counts = series()
    assert (counts["host not scanned"], counts["port no longer on the scan list"]) == (3, 1)
    assert (counts["other"], counts["address out of scope"]) == (1, 0)
