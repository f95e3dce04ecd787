"""Measuring one path: throughput (median of the runs), CPU per message, latency at half of
the maximum rate, the mixed corpus, peak RSS. A failure marks the row, never the whole run."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.bench import load, procstat
from tests.bench.load import CorpusItem
from tests.bench.peers import Daemons, Started
from tests.bench.report import Row

__all__ = ["Load", "idle_memory", "measure_smtp", "pipelined_cpu", "reject_rate"]


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


def measure_smtp(row: Row, target: Started, ld: Load, daemons: Daemons, sink: Started | None,
                 extra_cpu_pid: int | None = None) -> Row:  # fmt: skip
    """smtp-source bursts, then the paced latency client, then the mixed corpus.

    ``sink``: count deliveries there (a synchronous relay must deliver all N before its
    250s). ``extra_cpu_pid``: a helper whose CPU per 1,000 mixed messages is noted (spamd).
    """
    try:
        load.run_source(target.port, ld.warmup, ld.sessions, ld.size)
        rates, cpus, lost = [], [], 0
        for _ in range(ld.runs):
            before = daemons.sink_count(sink) if sink else 0
            c0 = procstat.cpu_seconds(target.pid)
            t = load.run_source(target.port, ld.messages, ld.sessions, ld.size)
            cpus.append(1000 * (procstat.cpu_seconds(target.pid) - c0) / ld.messages)
            rates.append(ld.messages / t)
            if sink:
                time.sleep(0.3)
                lost += max(0, ld.messages - (daemons.sink_count(sink) - before))
        row.rates, row.rate, row.cpu_ms = rates, statistics.median(rates), statistics.median(cpus)
        if lost:
            row.note += f" sink missed {lost} of {ld.runs * ld.messages};"
        latency(row, target, ld, row.rate / 2)
        extra0 = procstat.cpu_seconds(extra_cpu_pid) if extra_cpu_pid else 0.0
        mixed = load.mixed_corpus(target.port, list(ld.corpus), ld.mixed_n, ld.sessions)
        row.mixed_rate = ld.mixed_n / mixed.elapsed
        row.note += f" mixed: {_outcomes(mixed)};"
        if extra_cpu_pid:
            spent = procstat.cpu_seconds(extra_cpu_pid) - extra0
            row.note += f" spamd CPU {1000 * spent / ld.mixed_n:.1f} s per 1,000 mixed msgs;"
        row.rss_mb = procstat.peak_rss_kb(target.pid) / 1024
    except Exception as exc:  # one broken path must not hide the others
        row.na = "failed"
        row.note += f" {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc) else ''}"
    return row


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
