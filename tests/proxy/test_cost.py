"""``spamgate cost``: the paper's case study to the cent, the CLI and its errors."""

from __future__ import annotations

import argparse
import json
import socket
from decimal import Decimal

import pytest

from spamgate.proxy.tools.cost import CostInputs, compute, register, run, to_json

CASE_STUDY = ["--employees", "680", "--workdays", "230", "--hourly-wage", "15", "--spam-per-day", "25",
              "--seconds-per-spam", "3"]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spamgate")
    register(p.add_subparsers(dest="command", required=True))
    return p


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = parser().parse_args(["cost", *argv])
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_case_study_exact_figures() -> None:
    r = compute(CostInputs(Decimal(680), Decimal(230), Decimal(15), Decimal(25), Decimal(3)))
    # 680 * 25 * 3 s * 365 / 86400 s = 215.4514 days; 25 * 3 s * 365 / 3600 s = 7.6042 h
    assert r.cost_per_employee_per_day == Decimal("0.3125")
    assert r.cost_per_employee_per_year == Decimal("71.875")
    assert r.cost_per_day == Decimal("212.5")
    assert r.cost_per_year == Decimal("48875")
    assert round(r.productivity_days_per_year, 4) == Decimal("215.4514")
    assert round(r.productivity_hours_per_employee_per_year, 4) == Decimal("7.6042")


def test_case_study_json_to_the_cent(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli([*CASE_STUDY, "--json"], capsys)
    assert (rc, err) == (0, "")
    assert json.loads(out) == {
        "cost_per_year": 48875.00,
        "cost_per_day": 212.50,
        "cost_per_employee_per_year": 71.88,
        "cost_per_employee_per_day": 0.31,
        "productivity_days_per_year": 215.4514,
        "productivity_hours_per_employee_per_year": 7.6042,
    }


def test_case_study_text(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(CASE_STUDY, capsys)
    assert rc == 0
    assert "organisation:      €48,875.00 a year, €212.50 a workday" in out
    assert "per employee:      €71.88 a year, €0.31 a workday" in out
    assert "215.45 days (24 h) a year for the organisation, 7.60 hours a year per employee" in out
    assert "(estimate)" in out


def test_currency_and_fractional_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(["--employees", "10", "--workdays", "200", "--hourly-wage", "40.50", "--spam-per-day",
                      "12.5", "--seconds-per-spam", "4", "--currency", "$", "--json"], capsys)  # fmt: skip
    assert rc == 0
    # 12.5 * 4 s = 50 s a day = 0.5625 per employee per day at 40.50/h
    assert json.loads(out)["cost_per_employee_per_day"] == 0.56
    assert json.loads(out)["cost_per_year"] == 1125.00


def test_to_json_rounds_half_up() -> None:
    r = compute(CostInputs(Decimal(1), Decimal(1), Decimal(36), Decimal(1), Decimal("0.125")))
    assert r.cost_per_day == Decimal("0.00125")
    assert to_json(r)["cost_per_day"] == 0.0
    r = compute(CostInputs(Decimal(1), Decimal(1), Decimal(36), Decimal(1), Decimal("0.5")))
    assert to_json(r)["cost_per_day"] == 0.01  # 0.005 rounds up, not to even


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--employees", "0"], "must be greater than 0"),
        (["--hourly-wage", "-3"], "must be a non-negative number"),
        (["--spam-per-day", "lots"], "not a number"),
        (["--spam-per-day", "nan"], "must be a non-negative number"),
        (["--window", "yesterday", "--from-metrics", "http://127.0.0.1:1"], "not a Prometheus duration"),
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = dict(zip(CASE_STUDY[::2], CASE_STUDY[1::2], strict=True))
    for k, v in zip(argv[::2], argv[1::2], strict=True):
        base[k] = v
    if "--from-metrics" in base:
        del base["--spam-per-day"]
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["cost", *[x for kv in base.items() for x in kv]])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_spam_source_is_required_and_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    without = CASE_STUDY[:6] + CASE_STUDY[8:]
    with pytest.raises(SystemExit):
        parser().parse_args(["cost", *without])
    assert "one of the arguments --spam-per-day --from-metrics is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args(["cost", *CASE_STUDY, "--from-metrics", "http://127.0.0.1:9090"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_unreachable_prometheus_is_an_error_not_a_guess(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        argv = [*CASE_STUDY[:6], *CASE_STUDY[8:], "--from-metrics", f"http://127.0.0.1:{port}"]
        rc, out, err = cli(argv, capsys)
    assert rc == 1
    assert out == ""
    assert "cannot query Prometheus" in err


def test_run_is_the_registered_function() -> None:
    args = parser().parse_args(["cost", *CASE_STUDY])
    assert args.func is run
