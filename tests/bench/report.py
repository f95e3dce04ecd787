"""The benchmark's one table (text for the terminal, Markdown for the docs) and the README block.

Targets from issue 15 are printed next to the measured ratios: reported, never asserted.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BEGIN", "END", "Row", "Target", "markdown", "publish", "stamp", "text_table", "update_readme"]

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass
class Row:
    key: str
    label: str
    rate: float = math.nan  # msg/s, median of the runs
    rates: list[float] = field(default_factory=list)
    cpu_ms: float = math.nan  # CPU ms per message of the measured process tree
    p50: float = math.nan  # ms, paced at lat_rate
    p99: float = math.nan
    lat_rate: float = math.nan
    p99_added: float = math.nan  # p99 minus the sink's p99 at the same rate
    rss_mb: float = math.nan  # peak RSS
    mixed_rate: float = math.nan  # transactions/s on the mixed corpus
    vs: str = ""  # "1.02x naive"
    note: str = ""
    unit: str = "msg/s"
    na: str = ""  # why the path could not be measured ("n/a (not implemented)")


@dataclass
class Target:
    name: str
    measured: float  # a ratio, or a value in `unit`
    goal: str  # e.g. "≥ 1.5x"
    unit: str = "x"

    def met(self) -> str:
        if math.isnan(self.measured):
            return "n/a"
        m = re.match(r"([≥≤])\s*([\d.]+)", self.goal)
        if not m:
            return ""
        limit = float(m.group(2))
        ok = self.measured >= limit if m.group(1) == "≥" else self.measured <= limit
        return "met" if ok else "not met"

    def shown(self) -> str:
        """Two decimals, or three where two would print the goal's own number beside "not met"."""
        m = re.search(r"[\d.]+", self.goal)
        digits = 3 if m and _f(self.measured, 2) == _f(float(m.group()), 2) else 2
        return _f(self.measured, digits)


def _f(v: float, digits: int = 0) -> str:
    if math.isnan(v):
        return "-"
    return f"{v:,.{digits}f}"


def _cells(r: Row) -> list[str]:
    if r.na:
        return [r.label, r.na, "", "", "", "", "", "", r.note]
    rate = _f(r.rate, 1 if r.rate < 100 else 0) + ("" if r.unit == "msg/s" else f" {r.unit}")
    lat = "-" if math.isnan(r.p50) else f"{_f(r.p50, 1)} / {_f(r.p99, 1)} @{_f(r.lat_rate)}/s"
    return [r.label, rate, _f(r.cpu_ms, 2), lat, _f(r.rss_mb, 1), _f(r.mixed_rate, 0), r.vs, "", r.note]


HEAD = ["path", "msg/s", "CPU ms/msg", "p50 / p99 ms", "peak RSS MB", "mixed tx/s", "ratio", "", "notes"]


def text_table(rows: list[Row], targets: list[Target], header: str) -> str:
    body = [[*HEAD[:7], "notes"]] + [[*c[:7], c[8]] for c in map(_cells, rows)]
    widths = [max(len(line[i]) for line in body) for i in range(7)]
    out = [header, ""]
    for line in body:
        cells = [line[0].ljust(widths[0])] + [line[i].rjust(widths[i]) for i in range(1, 7)]
        out.append("  ".join(cells) + ("  " + line[7] if line[7] else ""))
    if targets:
        out += ["", "targets (issue 15; reported, not asserted):"]
        w = max(len(t.name) for t in targets)
        for t in targets:
            out.append(f"  {t.name.ljust(w)}  {t.shown():>8}{t.unit:<3} goal {t.goal:<8} {t.met()}")
    return "\n".join(out) + "\n"


def markdown(rows: list[Row], targets: list[Target], header: str) -> str:
    cols = [0, 1, 2, 3, 4, 5, 6, 8]
    head = [HEAD[i] for i in cols]
    lines = [header, "", "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * 6 + " --- |"]
    for r in rows:
        c = _cells(r)
        lines.append("| " + " | ".join(c[i].replace("|", "/") for i in cols) + " |")
    if targets:
        lines += ["", "| target (issue 15) | measured | goal | |", "| --- | ---: | --- | --- |"]
        lines += [f"| {t.name} | {t.shown()}{t.unit} | {t.goal} | {t.met()} |" for t in targets]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, block: str) -> None:
    """Replace what lies between the bench markers with ``block``."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} block to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{block.rstrip()}\n{END}{tail}")


def stamp() -> str:
    """When a figure was measured, as the docs quote it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def publish(text: str, markdown_file: Path | None) -> None:
    """A standalone benchmark's output: printed, and with ``--markdown FILE`` written there too."""
    print(text, end="")
    if markdown_file is not None:
        markdown_file.parent.mkdir(parents=True, exist_ok=True)
        markdown_file.write_text(text)
