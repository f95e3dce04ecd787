"""``spamgate cost``: what spam costs an organisation in wages and working time.

The model is the one of the paper spamgate comes from: every spam that reaches an
inbox costs each employee a few seconds of paid work on every workday. Money is
counted over workdays; the productivity lost is expressed, as in the paper's
reference calculator, over a 365-day year: in 24-hour days for the organisation and
in hours per employee. Its case study (680 employees, 230 workdays, 15 per hour,
25 spam per employee per day, 3 s each) costs 48,875.00 a year.

With --from-metrics URL the spam per employee per day is not a guess but the rate
at which spamgate rejected or quarantined mail (at end of DATA, or refused it earlier),
measured by Prometheus, per calendar day, divided by the number of employees.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from spamgate.proxy.errors import ToolError

__all__ = [
    "DEFAULT_QUERY",
    "SPAM_RATE",
    "CostInputs",
    "CostReport",
    "compute",
    "fetch_rate",
    "register",
    "run",
    "to_json",
]

CENT = Decimal("0.01")
# Spam kept out of inboxes: messages rejected or quarantined at end of DATA, plus filter
# rejections before DATA (DNSBL, spoofed local senders...), which never become transactions.
# The trailing `and` turns "Prometheus has never seen spamgate" into no data, not zero spam.
SPAM_RATE = (
    '(sum(rate(spamgate_transactions_total{action=~"reject|quarantine"}[WINDOW])) or vector(0))'
    ' + (sum(rate(spamgate_filter_verdicts_total{decision="reject",phase!="data"}[WINDOW])) or vector(0))'
)
DEFAULT_QUERY = f"({SPAM_RATE}) and on () count(spamgate_build_info)"
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True)
class CostInputs:
    employees: Decimal
    workdays: Decimal
    hourly_wage: Decimal
    spam_per_day: Decimal
    seconds_per_spam: Decimal


@dataclass(frozen=True)
class CostReport:
    """Exact figures; round only for display (``to_json`` rounds money to cents)."""

    cost_per_year: Decimal
    cost_per_day: Decimal
    cost_per_employee_per_year: Decimal
    cost_per_employee_per_day: Decimal
    productivity_days_per_year: Decimal
    productivity_hours_per_employee_per_year: Decimal


def compute(i: CostInputs) -> CostReport:
    seconds_per_employee_day = i.spam_per_day * i.seconds_per_spam
    per_employee_day = seconds_per_employee_day * i.hourly_wage / 3600
    return CostReport(
        cost_per_year=per_employee_day * i.employees * i.workdays,
        cost_per_day=per_employee_day * i.employees,
        cost_per_employee_per_year=per_employee_day * i.workdays,
        cost_per_employee_per_day=per_employee_day,
        productivity_days_per_year=i.employees * seconds_per_employee_day * 365 / 86400,
        productivity_hours_per_employee_per_year=seconds_per_employee_day * 365 / 3600,
    )


def _money(d: Decimal) -> Decimal:
    return d.quantize(CENT, rounding=ROUND_HALF_UP)


def to_json(r: CostReport) -> dict[str, float]:
    return {
        "cost_per_year": float(_money(r.cost_per_year)),
        "cost_per_day": float(_money(r.cost_per_day)),
        "cost_per_employee_per_year": float(_money(r.cost_per_employee_per_year)),
        "cost_per_employee_per_day": float(_money(r.cost_per_employee_per_day)),
        "productivity_days_per_year": float(r.productivity_days_per_year.quantize(Decimal("0.0001"), ROUND_HALF_UP)),
        "productivity_hours_per_employee_per_year": float(
            r.productivity_hours_per_employee_per_year.quantize(Decimal("0.0001"), ROUND_HALF_UP)
        ),
    }


def render(i: CostInputs, r: CostReport, currency: str, source: str) -> str:
    def money(d: Decimal) -> str:
        return f"{currency}{_money(d):,.2f}"

    return (
        f"Cost of spam: {i.employees} employees, {i.workdays} workdays a year, {money(i.hourly_wage)} an hour,\n"
        f"  {i.spam_per_day:.2f} spam per employee per day ({source}), {i.seconds_per_spam} s lost per spam\n"
        f"organisation:      {money(r.cost_per_year)} a year, {money(r.cost_per_day)} a workday\n"
        f"per employee:      {money(r.cost_per_employee_per_year)} a year, "
        f"{money(r.cost_per_employee_per_day)} a workday\n"
        f"productivity lost: {r.productivity_days_per_year:.2f} days (24 h) a year for the organisation, "
        f"{r.productivity_hours_per_employee_per_year:.2f} hours a year per employee\n"
    )


class MetricsError(ToolError):
    """Prometheus could not be asked, or had no answer to the query."""


def fetch_rate(url: str, query: str, timeout: float = 10.0) -> float:
    """Evaluate an instant PromQL query that yields one number (spam per second)."""
    endpoint = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as resp:
            payload: Any = json.load(resp)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise MetricsError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MetricsError(f"{url}: cannot query Prometheus: {exc}") from None
    data = payload.get("data", {}) if isinstance(payload, dict) else {}
    result = data.get("result")
    if payload.get("status") != "success" or result is None:
        raise MetricsError(f"{url}: unexpected answer: {str(payload)[:300]}")
    if data.get("resultType") == "scalar":
        return float(result[1])
    if not result:
        raise MetricsError(f"no data for {query!r}: is Prometheus scraping spamgate, over a long enough window?")
    if len(result) > 1:
        raise MetricsError(f"{query!r} returned {len(result)} series; it must return one (use sum())")
    return float(result[0]["value"][1])


def _decimal(text: str) -> Decimal:
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not d.is_finite() or d < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number: {text!r}")
    return d


def _positive(text: str) -> Decimal:
    d = _decimal(text)
    if d == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return d


def _window(text: str) -> str:
    if not _DURATION.match(text):
        raise argparse.ArgumentTypeError(f"not a Prometheus duration (like 1d, 7d, 12h): {text!r}")
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cost",
        help="compute what spam costs in wages and working time",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--employees", type=_positive, required=True, help="people receiving mail")
    p.add_argument("--workdays", type=_positive, required=True, help="workdays per year (e.g. 230)")
    p.add_argument("--hourly-wage", type=_decimal, required=True, help="cost of one hour of work")
    p.add_argument("--seconds-per-spam", type=_decimal, required=True, help="working seconds lost per spam")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--spam-per-day", type=_decimal, help="spam per employee per day (an estimate)")
    src.add_argument(
        "--from-metrics",
        metavar="URL",
        help="Prometheus base URL (http://host:9090): use the measured rate of rejected and quarantined mail",
    )
    p.add_argument("--window", type=_window, default="1d", help="averaging window for --from-metrics (default 1d)")
    p.add_argument(
        "--query",
        help="PromQL giving spam per second, overriding the default: " + DEFAULT_QUERY.replace("WINDOW", "<window>"),
    )
    p.add_argument("--currency", default="€", help="symbol printed before amounts (default €)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_metrics is not None:
        query = args.query or DEFAULT_QUERY.replace("WINDOW", args.window)
        try:
            rate = fetch_rate(args.from_metrics, query)
        except MetricsError as exc:
            print(f"spamgate cost: {exc}", file=sys.stderr)
            return 1
        spam_per_day = Decimal(repr(rate)) * 86400 / args.employees
        source = f"measured over {args.window}"
    else:
        spam_per_day = args.spam_per_day
        source = "estimate"
    inputs = CostInputs(args.employees, args.workdays, args.hourly_wage, spam_per_day, args.seconds_per_spam)
    report = compute(inputs)
    if args.json:
        print(json.dumps(to_json(report)))
    else:
        sys.stdout.write(render(inputs, report, args.currency, source))
    return 0
