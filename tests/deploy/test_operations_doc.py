"""docs/operations.md cannot rot: its metric table, alert table and cost example are checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.promql import defined_label_names, import_all_metric_modules

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text()


def table_rows(first_column: str) -> dict[str, str]:
    """Rows of the markdown table whose header starts with ``first_column``, by first cell."""
    rows: dict[str, str] = {}
    lines = DOC.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"| {first_column} |"):
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip("|").split("|")]
                rows[cells[0].strip("`")] = row
    return rows


def test_every_metric_is_documented_with_its_labels() -> None:
    import_all_metric_modules()
    documented = table_rows("metric")
    families = {
        re.sub(r"_(bucket|count|sum)$", "", n): labels
        for n, labels in defined_label_names().items()
        if not n.endswith("_created")
    }
    for base, labels in families.items():
        assert base in documented, f"{base} missing from the metrics table in docs/operations.md"
        cells = [c.strip() for c in documented[base].strip("|").split("|")]
        for label in labels - {"le"}:
            assert label in cells[2], f"{base}: label {label} not documented"
    assert set(documented) <= set(families), sorted(set(documented) - set(families))


def test_every_alert_is_documented() -> None:
    doc = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    alerts = {r["alert"] for g in doc["groups"] for r in g["rules"]}
    assert set(table_rows("alert")) == alerts


def test_cost_example_output_is_what_the_command_prints() -> None:
    argv = ["--employees", "680", "--workdays", "230", "--hourly-wage", "15", "--spam-per-day", "25",
            "--seconds-per-spam", "3"]  # fmt: skip
    assert "spamgate cost " + " ".join(argv) in DOC
    assert cost(argv) in DOC
    figures = json.loads(cost([*argv, "--json"]))
    for key in figures:
        assert f"`{key}`" in DOC


def cost(argv: list[str]) -> str:
    cmd = [sys.executable, "-m", "spamgate.proxy", "cost", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout


def test_dashboard_rows_are_described() -> None:
    dash = json.loads((ROOT / "grafana/dashboards/spamgate.json").read_text())
    for row in (p["title"] for p in dash["panels"] if p["type"] == "row"):
        assert f"**{row}**" in DOC, row
