"""grafana/: the dashboard JSON and provisioning files, checked without Grafana.

Every query must parse (promtool), use only metrics and labels that spamgate's code
defines, and only variables the dashboard defines. The live proof that every panel has
data is tests/integration/test_dashboard.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from spamgate.proxy.tools.cost import SPAM_RATE
from tests.promql import (
    defined_label_names,
    defined_sample_names,
    import_all_metric_modules,
    label_uses,
    metric_names,
    substitute,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "spamgate.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
BUILTINS = {"__rate_interval", "__range", "__interval"}
TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def targets() -> list[tuple[str, str, str]]:
    return [(p["title"], t["refId"], t["expr"]) for p in panels() for t in p["targets"]]


def variables() -> dict[str, str]:
    """Each dashboard variable with the value the tests substitute (its default)."""
    out = {}
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "textbox":
            out[v["name"]] = v["query"]
        elif v["type"] == "query":
            out[v["name"]] = v["allValue"]
        elif v["type"] == "datasource":
            out[v["name"]] = "prometheus"
    return out


def test_rows_cover_the_issue() -> None:
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    for wanted in ("Traffic", "Verdicts", "Latency", "Dependencies", "Security", "Cost of spam avoided"):
        assert wanted in rows


def test_layout_ids_and_refids() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels():
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]


def test_cost_variables_have_the_paper_defaults() -> None:
    v = variables()
    assert (v["employees"], v["hourly_wage"], v["seconds_per_spam"], v["workdays"]) == ("680", "15", "3", "230")


@pytest.mark.parametrize(("panel", "ref", "expr"), targets(), ids=lambda x: str(x)[:40])
def test_query_uses_only_defined_metrics_labels_and_variables(panel: str, ref: str, expr: str) -> None:
    import_all_metric_modules()
    names = metric_names(expr)
    assert names, f"{panel}/{ref}: no metric in {expr!r}"
    unknown = names - defined_sample_names()
    assert not unknown, f"{panel}/{ref}: metrics no code defines: {sorted(unknown)}"
    labels = defined_label_names()
    for metric, used in label_uses(expr):
        extra = used - labels[metric] - TARGET_LABELS
        assert not extra, f"{panel}/{ref}: {metric} has no label(s) {sorted(extra)}"
    used_vars = set(re.findall(r"\$\{?(\w+)", expr))
    assert used_vars <= set(variables()) | BUILTINS, f"{panel}/{ref}: undefined variables"


def test_instance_variable_query_uses_a_defined_metric() -> None:
    import_all_metric_modules()
    inst = next(v for v in dashboard()["templating"]["list"] if v["name"] == "instance")
    assert inst["definition"] == "label_values(spamgate_build_info, instance)"
    assert "spamgate_build_info" in defined_sample_names()


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (variables substituted) as a recording rule."""
    rules = [
        {"record": f"panel:{i}", "expr": substitute(expr, variables(), "5m")}
        for i, (_, _, expr) in enumerate(targets())
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    res = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules)} rules found" in res.stdout


def test_cost_panels_use_the_same_spam_rate_as_spamgate_cost() -> None:
    cost_row = False
    seen = 0
    for p in dashboard()["panels"]:
        if p["type"] == "row":
            cost_row = p["title"] == "Cost of spam avoided"
            continue
        if cost_row:
            for t in p["targets"]:
                assert (
                    SPAM_RATE.replace("WINDOW", "$__range") in t["expr"]
                    or SPAM_RATE.replace("WINDOW", "$__rate_interval") in t["expr"]
                ), p["title"]
                seen += 1
    assert seen >= 6


def test_provisioning_files() -> None:
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    assert ds["datasources"][0]["type"] == "prometheus"
    dash = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/spamgate.yml").read_text())
    provider = dash["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def test_scanner_rejects_an_unknown_metric_and_label() -> None:
    import_all_metric_modules()
    assert metric_names('sum(rate(spamgate_nope_total{a="b"}[5m]))') - defined_sample_names() == {"spamgate_nope_total"}
    uses = label_uses('sum by (listener) (rate(spamgate_transactions_total{action="reject"}[5m]))')
    labels = defined_label_names()
    assert [(m, u - labels[m]) for m, u in uses] == [
        ("spamgate_transactions_total", set()),
        ("spamgate_transactions_total", {"listener"}),
    ]
