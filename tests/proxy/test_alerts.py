"""deploy/prometheus: the alert rules pass promtool's checks and unit tests, and use real metrics."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import defined_label_names, defined_sample_names, import_all_metric_modules, label_uses, metric_names

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Prometheus' own series the rules may use besides spamgate's.
PROMETHEUS_SERIES = {"up"}


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_is_installed() -> None:
    assert Path(PROMTOOL).is_file(), "promtool missing: apt-get install prometheus"


def test_check_rules() -> None:
    res = promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules())} rules found" in res.stdout


def test_unit_tests_pass() -> None:
    res = promtool("test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_example_prometheus_config_is_valid() -> None:
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests are not vacuous: loosening one threshold makes them fail."""
    text = (PROM / "alerts.yml").read_text()
    broken = text.replace("rate(spamgate_spamd_scans_total[5m])) > 0.1", "rate(spamgate_spamd_scans_total[5m])) > 0.9")
    assert broken != text
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    res = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert res.returncode != 0
    assert "SpamgateSpamdFailing" in res.stdout + res.stderr


def test_every_alert_is_unit_tested() -> None:
    doc = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    tested = {a["alertname"] for t in doc["tests"] for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    assert tested == {r["alert"] for r in rules()}


def test_the_issue_alerts_exist() -> None:
    names = {r["alert"] for r in rules()}
    for wanted in ("SpamgateBackendDown", "SpamgateBackendErroring", "SpamgateSpamdFailing", "SpamgateDnsFailing",
                   "SpamgateFilterErrors", "SpamgateRejectRateSpike", "SpamgateFilterLatencySLO",
                   "SpamgateNoTraffic"):  # fmt: skip
        assert wanted in names


def test_every_rule_has_severity_summary_and_runbook() -> None:
    for r in rules():
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert r["annotations"]["runbook"].startswith("docs/operations.md#"), r["alert"]


@pytest.mark.parametrize("rule", rules(), ids=lambda r: str(r["alert"]))
def test_rules_use_only_metrics_spamgate_defines(rule: dict[str, Any]) -> None:
    import_all_metric_modules()
    unknown = metric_names(rule["expr"]) - defined_sample_names() - PROMETHEUS_SERIES
    assert not unknown, f"{rule['alert']} uses metrics no code defines: {sorted(unknown)}"
    labels = defined_label_names()
    for metric, used in label_uses(rule["expr"]):
        if metric in PROMETHEUS_SERIES:
            continue
        extra = used - labels[metric] - {"instance", "job"}
        assert not extra, f"{rule['alert']}: {metric} has no label(s) {sorted(extra)}"


def test_metric_name_scanner() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (filter, le) (rate(spamgate_filter_duration_seconds_bucket{phase="data",'
        ' filter=~"a|b"}[5m]))) > 5 and on (instance) up{job="x"} == 1 unless ignoring(le) foo:bar offset 1h'
    )
    assert metric_names(expr) == {"spamgate_filter_duration_seconds_bucket", "up", "foo:bar"}
    assert metric_names("sum(rate(x_total[$__rate_interval])) * $employees / 3600") == {"x_total"}
