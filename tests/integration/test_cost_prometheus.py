"""``spamgate cost --from-metrics`` against a real Prometheus holding known series.

The series are backfilled with promtool (exact timestamps, extending past "now") so the
measured rate is known: 0.1 rejected at DATA/s + 0.05 refused at RCPT/s = 12,960 spam a day.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from spamgate.proxy.tools.cost import CostInputs, compute, register
from tests.integration.services.prometheus import Prometheus
from tests.promql import substitute

pytestmark = pytest.mark.integration


def series(now: int) -> str:
    start, end = now - 3 * 3600, now + 3600

    def counter(name: str, labels: str, step: int, per_step: int) -> list[str]:
        return [f"{name}_total{{{labels}}} {i * per_step} {start + i * step}" for i in range((end - start) // step)]

    return "\n".join([
        "# TYPE spamgate_transactions counter",
        *counter("spamgate_transactions", 'action="reject"', 10, 1),
        *counter("spamgate_transactions", 'action="accept"', 10, 7),
        "# TYPE spamgate_filter_verdicts counter",
        # refused before DATA: counted; a DATA-phase reject is already a "reject" transaction
        *counter("spamgate_filter_verdicts", 'filter="rbl",phase="rcpt",decision="reject"', 20, 1),
        *counter("spamgate_filter_verdicts", 'filter="spamassassin",phase="data",decision="reject"', 10, 1),
        *counter("spamgate_filter_verdicts", 'filter="rbl",phase="rcpt",decision="continue"', 10, 3),
        "# TYPE spamgate_build_info gauge",
        *[f'spamgate_build_info{{version="0.1.0"}} 1 {t}' for t in range(start, end, 10)],
        "# EOF",
        "",
    ])  # fmt: skip


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = Prometheus(Path(tmp_path_factory.mktemp("prom-cost")))
    prom.backfill(series(int(time.time())))
    prom.start()
    yield prom
    prom.stop()


def cost(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    p = argparse.ArgumentParser(prog="spamgate")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["cost", *argv])
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


BASE = ["--employees", "480", "--workdays", "230", "--hourly-wage", "16", "--seconds-per-spam", "3"]


def test_measured_rate_drives_the_figures(prometheus: Prometheus, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cost([*BASE, "--from-metrics", prometheus.url, "--window", "1h", "--json"], capsys)
    assert (rc, err) == (0, "")
    # 12,960 spam a day / 480 employees = 27 each; 27 * 3 s * 16/h = 0.36 a workday
    assert json.loads(out) == {
        "cost_per_year": 39744.00,
        "cost_per_day": 172.80,
        "cost_per_employee_per_year": 82.80,
        "cost_per_employee_per_day": 0.36,
        "productivity_days_per_year": 164.2500,
        "productivity_hours_per_employee_per_year": 8.2125,
    }


def test_text_output_says_the_figure_was_measured(prometheus: Prometheus, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cost([*BASE, "--from-metrics", prometheus.url + "/", "--window", "2h"], capsys)
    assert rc == 0
    assert "27.00 spam per employee per day (measured over 2h)" in out
    assert "€39,744.00 a year" in out


def test_custom_query(prometheus: Prometheus, capsys: pytest.CaptureFixture[str]) -> None:
    query = 'sum(rate(spamgate_transactions_total{action="reject"}[1h]))'
    rc, out, _ = cost([*BASE, "--from-metrics", prometheus.url, "--query", query, "--json"], capsys)
    assert rc == 0
    assert json.loads(out)["cost_per_day"] == 115.20  # 18 spam each a day


def test_no_data_is_an_error(prometheus: Prometheus, capsys: pytest.CaptureFixture[str]) -> None:
    query = "sum(rate(spamgate_nothing_total[1h])) > 0"
    rc, out, err = cost([*BASE, "--from-metrics", prometheus.url, "--query", query], capsys)
    assert (rc, out) == (1, "")
    assert "no data for" in err


def test_several_series_is_an_error(prometheus: Prometheus, capsys: pytest.CaptureFixture[str]) -> None:
    query = "rate(spamgate_transactions_total[1h])"
    rc, _, err = cost([*BASE, "--from-metrics", prometheus.url, "--query", query], capsys)
    assert rc == 1
    assert "returned 2 series" in err


def test_bad_promql_reports_prometheus_error(prometheus: Prometheus, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cost([*BASE, "--from-metrics", prometheus.url, "--query", "sum(rate("], capsys)
    assert rc == 1
    assert "HTTP 400" in err
    assert "parse error" in err


def test_prometheus_without_spamgate_data_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = Prometheus(tmp_path)
    empty.start()
    try:
        rc, out, err = cost([*BASE, "--from-metrics", empty.url], capsys)
    finally:
        empty.stop()
    assert (rc, out) == (1, "")
    assert "no data for" in err


def test_scalar_query(prometheus: Prometheus, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cost([*BASE, "--from-metrics", prometheus.url, "--query", "scalar(vector(0.05))", "--json"], capsys)
    assert rc == 0
    assert json.loads(out)["cost_per_day"] == 57.60  # 4,320 a day / 480 = 9 each


def test_dashboard_cost_panels_agree_with_spamgate_cost(prometheus: Prometheus) -> None:
    """The Grafana cost row, evaluated by Prometheus, gives the calculator's figures."""
    dash = json.loads((Path(__file__).resolve().parents[2] / "grafana/dashboards/spamgate.json").read_text())
    report = compute(CostInputs(Decimal(480), Decimal(230), Decimal(16), Decimal(27), Decimal(3)))
    expected: dict[str, Decimal | int] = {
        "Spam avoided per employee per day": 27,
        "Money saved per year": report.cost_per_year,
        "Money saved per workday": report.cost_per_day,
        "Money saved per employee per year": report.cost_per_employee_per_year,
        "Working time saved per year (24-hour days)": report.productivity_days_per_year,
        "Hours saved per employee per year": report.productivity_hours_per_employee_per_year,
        "Money saved per year, at the current rate": report.cost_per_year,
    }
    variables = {"employees": "480", "hourly_wage": "16", "seconds_per_spam": "3", "workdays": "230", "instance": ".*"}
    seen = {}
    for panel in dash["panels"]:
        if panel["title"] in expected:
            (target,) = panel["targets"]
            result = prometheus.query(substitute(target["expr"], variables, "1h"))["result"]
            seen[panel["title"]] = float(result[0]["value"][1])
    assert seen.keys() == expected.keys()
    for title, value in seen.items():
        assert value == pytest.approx(float(expected[title]), rel=1e-9), title
