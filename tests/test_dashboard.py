"""The chart's Grafana dashboard: shipped by the chart when asked, every query valid PromQL (real
promtool), and every series it reads one the daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from goalkeeper.metrics import Metrics
from tests.test_chart import CHART, RELEASE, chart, render  # noqa: F401 - chart is a fixture

DASHBOARD = CHART / "dashboards" / "goalkeeper.json"
SERIES = re.compile(r"\b((?:goalkeeper|process|python)_[a-z_]+)\b")


def queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    assert found
    return found


def exported() -> set[str]:
    """Every series name a daemon's /metrics can carry, labelled ones before their first value
    too: counters with _total, histograms' parts, info with _info."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
    }
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def test_the_dashboard_ships_as_a_configmap_for_grafanas_sidecar(chart: Any) -> None:  # noqa: F811
    assert f"ConfigMap/{RELEASE}-dashboard" not in render(chart, {})
    objects = render(chart, {"metrics": {"grafanaDashboard": {"enabled": True}}})
    configmap = objects[f"ConfigMap/{RELEASE}-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["goalkeeper.json"]) == json.loads(DASHBOARD.read_text())


def test_every_series_the_dashboard_reads_is_exported() -> None:
    names = exported()
    for query in queries():
        for series in SERIES.findall(query):
            assert series in names, f"{series} (in {query}) is not a metric of goalkeeper"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool checks PromQL in rule files: each query becomes a recording rule, with Grafana's
    # $job variable given a value as Grafana would.
    rules = [
        {"record": f"dashboard:query_{n}", "expr": query.replace("$job", "goalkeeper")}
        for n, query in enumerate(queries())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
