"""Measuring one path: throughput (median of the runs), CPU per message, latency at half of
the maximum rate, the mixed corpus, peak RSS. A failure marks the row, never the whole run."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tests.bench import load, procstat
from tests.bench.load import CorpusItem
from tests.bench.peers import Daemons, Started
from tests.bench.report import Row

__all__ = ["Load", "Measured", "Turns", "idle_memory", "interleaved", "pipelined_cpu", "reject_rate"]


@dataclass(frozen=True)
class Load:
    messages: int
    sessions: int
    size: int
    runs: int
    warmup: int
    latency_n: int
    latency_cap: float  # msg/s: the paced Python client's own ceiling on 2 shared cores
    mixed_n: int
    corpus: tuple[CorpusItem, ...]
    probe: CorpusItem


def _cpu_ms(pid: int, fn: Callable[[], object], n: int) -> float:
    c0 = procstat.cpu_seconds(pid)
    fn()
    return 1000 * (procstat.cpu_seconds(pid) - c0) / max(n, 1)


@dataclass
class Measured:
    """One smtp-source path under measurement: its row, its process and where it delivers."""

    row: Row
    target: Started
    sink: Started | None = None  # count deliveries there (a synchronous relay must deliver all N before its 250s)
    extra_cpu_pid: int | None = None  # a helper whose CPU per 1,000 mixed messages is noted (spamd)
    cpus: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # share of all cores busy during each run (anyone's work)
    lost: int = 0


def _failed(row: Row, exc: Exception) -> None:  # one broken path must not hide the others
    row.na = "failed"
    row.note += f" {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc) else ''}"


def warm(m: Measured, ld: Load) -> None:
    try:
        load.run_source(m.target.port, ld.warmup, ld.sessions, ld.size)
    except Exception as exc:
        _failed(m.row, exc)


def burst(m: Measured, ld: Load, daemons: Daemons) -> None:
    """One smtp-source run of N messages: its rate and the CPU per message."""
    if m.row.na:
        return
    try:
        before = daemons.sink_count(m.sink) if m.sink else 0
        c0, machine0 = procstat.cpu_seconds(m.target.pid), procstat.machine_ticks()
        t = load.run_source(m.target.port, ld.messages, ld.sessions, ld.size)
        m.busy.append(procstat.busy_share(machine0, procstat.machine_ticks()))
        m.cpus.append(1000 * (procstat.cpu_seconds(m.target.pid) - c0) / ld.messages)
        m.row.rates.append(ld.messages / t)
        if m.sink:
            time.sleep(0.3)
            m.lost += max(0, ld.messages - (daemons.sink_count(m.sink) - before))
    except Exception as exc:
        _failed(m.row, exc)


def settle(m: Measured, ld: Load) -> Row:
    """The medians of the runs, then the paced latency client, the mixed corpus and peak RSS."""
    row = m.row
    if row.na:
        return row
    try:
        row.rate, row.cpu_ms = statistics.median(row.rates), statistics.median(m.cpus)
        # Saturated cores mean the rate is what the machine leaves this path, not a latency limit.
        row.note += f" machine {100 * statistics.median(m.busy):.0f}% busy;"
        # Each run's CPU, in turn order: the spread within one invocation, against the spread between invocations.
        row.note += f" CPU ms/msg per run {' '.join(f'{c:.2f}' for c in m.cpus)};"
        if m.lost:
            row.note += f" sink missed {m.lost} of {len(row.rates) * ld.messages};"
        latency(row, m.target, ld, row.rate / 2)
        extra0 = procstat.cpu_seconds(m.extra_cpu_pid) if m.extra_cpu_pid else 0.0
        mixed = load.mixed_corpus(m.target.port, list(ld.corpus), ld.mixed_n, ld.sessions)
        row.mixed_rate = ld.mixed_n / mixed.elapsed
        row.note += f" mixed: {_outcomes(mixed)};"
        if m.extra_cpu_pid:
            spent = procstat.cpu_seconds(m.extra_cpu_pid) - extra0
            row.note += f" spamd CPU {1000 * spent / ld.mixed_n:.1f} s per 1,000 mixed msgs;"
        row.rss_mb = procstat.peak_rss_kb(m.target.pid) / 1024
    except Exception as exc:
        _failed(row, exc)
    return row


class Turns(Protocol):
    """A path measured with its own client (spamd alone) that takes its runs in the same turns."""

    def warm(self) -> None: ...
    def burst(self) -> None: ...
    def settle(self) -> None: ...


@dataclass
class _Smtp:
    m: Measured
    ld: Load
    daemons: Daemons

    def warm(self) -> None:
        warm(self.m, self.ld)

    def burst(self) -> None:
        burst(self.m, self.ld, self.daemons)

    def settle(self) -> None:
        settle(self.m, self.ld)


def interleaved(paths: list[Measured], ld: Load, daemons: Daemons, others: Sequence[Turns] = ()) -> None:
    """Every path's runs taken in turns, not one path after the other: a slow spell of the machine
    (or the first-measured path's handicap) then falls on every path alike, not on one row. The
    order alternates between rounds."""
    turns: list[Turns] = [*(_Smtp(m, ld, daemons) for m in paths), *others]
    for t in turns:
        t.warm()
    for i in range(ld.runs):
        for t in turns if i % 2 == 0 else reversed(turns):
            t.burst()
    for t in turns:
        t.settle()


def pipelined_cpu(row: Row, target: Started, ld: Load) -> Row:
    """Throughput and CPU per message with a pipelining client (run_pipelined). A Python client
    loads spamgate less than smtp-source does, and a less busy event loop spends more per message:
    compare this row between builds (A/B), not with the smtp-source rows."""
    try:
        load.run_pipelined(target.port, ld.probe, ld.warmup, ld.sessions)
        rates, cpus = [], []
        for _ in range(ld.runs):
            c0 = procstat.cpu_seconds(target.pid)
            t = load.run_pipelined(target.port, ld.probe, ld.messages, ld.sessions)
            cpus.append(1000 * (procstat.cpu_seconds(target.pid) - c0) / ld.messages)
            rates.append(ld.messages / t)
        row.rates, row.rate, row.cpu_ms = rates, statistics.median(rates), statistics.median(cpus)
        row.note += " a Python client: compare between builds, not with the smtp-source rows;"
        row.rss_mb = procstat.peak_rss_kb(target.pid) / 1024
    except Exception as exc:
        row.na = "failed"
        row.note += f" {type(exc).__name__}: {str(exc)[:160]}"
    return row


def latency(row: Row, target: Started, ld: Load, rate: float) -> None:
    capped = min(rate, ld.latency_cap)
    res = load.paced_latency(target.port, ld.probe, capped, ld.latency_n)
    row.p50, row.p99, row.lat_rate = res.p50, res.p99, capped
    if res.errors:
        row.note += f" {res.errors} latency probes failed;"


def _outcomes(mixed: load.MixedResult) -> str:
    """ham 250 / spam 250 / spoofed mail:553 ... : what happened to each kind, compactly."""
    by_kind: dict[str, list[str]] = {}
    for key, count in sorted(mixed.outcomes.items()):
        kind, stage, code = key.split(":")
        what = code if stage == "dot" else f"{stage} {code}"
        by_kind.setdefault(kind, []).append(what if len(mixed.outcomes) < 2 else f"{what}x{count}")
    return " ".join(f"{k} {'+'.join(v)}" for k, v in by_kind.items())


def reject_rate(row: Row, target: Started, item: CorpusItem, n: int, sessions: int) -> Row:
    """Connections per second refused at RCPT for a listed client, and CPU per refusal."""
    try:
        load.reject_early(target.port, item, max(n // 10, 5), sessions)  # warm: the DNS cache
        c0 = procstat.cpu_seconds(target.pid)
        res = load.reject_early(target.port, item, n, sessions)
        refused = sum(v for k, v in res.outcomes.items() if k.split(":")[1] == "rcpt" and k.split(":")[2][0] == "5")
        row.rate = refused / res.elapsed
        row.cpu_ms = 1000 * (procstat.cpu_seconds(target.pid) - c0) / max(refused, 1)
        row.note += f" {refused} of {n} refused at RCPT; {_outcomes(res)};"
        if refused == 0:
            row.rate = math.nan
    except Exception as exc:
        row.na = "failed"
        row.note += f" {type(exc).__name__}: {exc}"
    return row


def idle_memory(row: Row, target: Started, count: int) -> float:
    """RSS added per idle session (KB) with ``count`` sessions open after EHLO, from 50 addresses."""
    sources = [f"127.0.0.{i}" for i in range(10, 60)]
    try:
        before = procstat.rss_kb(target.pid)
        with load.hold_idle_sessions(target.port, count, sources) as held:
            time.sleep(1.0)
            after = procstat.rss_kb(target.pid)
        per = (after - before) / max(held, 1)
        row.rss_mb = after / 1024
        row.note += f" {held} of {count} sessions held; RSS {before / 1024:.1f} → {after / 1024:.1f} MB"
        row.note += f" = {per:.1f} KB per session;"
        row.rate, row.unit = float(held), "sessions"
        return per
    except Exception as exc:
        row.na = "failed"
        row.note += f" {type(exc).__name__}: {exc}"
        return math.nan
