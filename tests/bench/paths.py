"""The paths of issue 15, started and measured (those delivering to the sink in turns), and the ratios between them."""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from tests.bench import load, scenario
from tests.bench.measure import (
    Load,
    Measured,
    idle_memory,
    interleaved,
    latency,
    pipelined_cpu,
    reject_rate,
)
from tests.bench.peers import Daemons, Started, free_port, haraka_bin
from tests.bench.report import Row, Target
from tests.bench.spamd_load import SpamdAlone

__all__ = ["PATHS", "run_paths"]

# every path, in the table's order (the keys of bench.py --only)
PATHS = ["sink", "naive", "haraka", "aiosmtpd", "streams", "protocol", "production", "pipelined", "no-rdns", "cheap",
         "workers", "postfix", "spamgate-postfix", "spampd", "spamassassin", "spamd", "reject", "idle"]  # fmt: skip


def _ratio(a: Row | None, b: Row | None, *, mixed: bool = False) -> float:
    """a's rate over b's: msg/s, or with `mixed` transactions/s on the mixed corpus."""
    if a is None or b is None or a.na or b.na:
        return math.nan
    x, y = (a.mixed_rate, b.mixed_rate) if mixed else (a.rate, b.rate)
    return x / y if y and not math.isnan(y) else math.nan


def _vs(row: Row, *bases: tuple[str, Row | None]) -> None:
    row.vs = ", ".join(f"{_ratio(row, b):.2f}x {name}" for name, b in bases if not math.isnan(_ratio(row, b)))


def _workers_supported(config: Path) -> str | None:
    """None if `spamgate check-config` accepts [server] workers, else its first complaint."""
    exe = Path(sys.executable).with_name("spamgate")
    res = subprocess.run([str(exe), "check-config", str(config)], capture_output=True, text=True, check=False)
    why = (res.stderr.strip().splitlines() or ["rejected"])[-1]
    return None if res.returncode == 0 else why.split(".toml: ", 1)[-1]


def _log_errors(rows: dict[str, Row], work: Path) -> None:
    """Note ERROR lines in each spamgate log: a benchmark of a proxy busy logging tracebacks is no benchmark."""
    for key, row in rows.items():
        log = work / f"{key}.log"
        if key in ("sink", "naive", "haraka", "postfix", "spampd", "spamd") or not log.exists():
            continue
        errors = sum(1 for line in log.open(errors="replace") if " ERROR " in line)
        if errors:
            row.note += f" spamgate logged {errors} ERROR lines (see --keep);"


def run_paths(args: argparse.Namespace, ld: Load, work: Path) -> tuple[list[Row], list[Target]]:
    paths = set(args.paths)
    rows: dict[str, Row] = {}
    d = Daemons(work)
    stack = contextlib.ExitStack()
    try:
        sink = d.sink()
        needs_dns = paths & {"production", "pipelined", "no-rdns", "cheap", "workers", "spamgate-postfix",
                             "spamassassin", "reject", "idle"}
        dns_port = 0
        if needs_dns:
            from tests.integration.services.dns import start_dns

            server = start_dns(scenario.zones(), work / "nsd")
            stack.callback(server.stop)
            dns_port = server.port

        def config(kind: str, backend: int, **kw: int) -> str:
            return scenario.spamgate_config(kind, work=work, port=free_port(), backend=backend, dns_port=dns_port,
                                            metrics_port=free_port(), **kw)  # fmt: skip

        # The paths that deliver to the sink run side by side and are measured in turns (interleaved).
        group: list[Measured] = []

        def add(key: str, label: str, target: Started, to: Started | None = sink) -> None:
            group.append(Measured(Row(key, label), target, to))
            rows[key] = group[-1].row

        if "sink" in paths:
            add("sink", "smtp-source → smtp-sink (the machine's limit)", sink, None)
        if "naive" in paths:
            add("naive", "→ naive aiosmtpd/aiosmtplib forwarder → sink", d.naive(sink.port))
        if "haraka" in paths:
            if haraka_bin().exists() and shutil.which("node"):
                add("haraka", "→ Haraka 3.3.4 (smtp_forward) → sink", d.haraka(sink.port))
            else:
                rows["haraka"] = Row("haraka", "→ Haraka 3.3.4 (smtp_forward) → sink", na="n/a",
                                     note="Haraka not installed (npm)")  # fmt: skip
        if "aiosmtpd" in paths:
            add("aiosmtpd", "→ aiosmtpd alone, answering 250 (no relay, no filter, no log)", d.floor("aiosmtpd"), None)
        if "streams" in paths:
            add("streams", "→ asyncio streams, a task per session, answering 250", d.floor("streams"), None)
        if "protocol" in paths:
            add("protocol", "→ a bare asyncio Protocol, answering 250 (no relay)", d.floor("protocol"), None)
        prod: Started | None = None
        if paths & {"production", "pipelined"}:
            prod = d.spamgate("production", config("production", sink.port))
        if "production" in paths and prod:
            add("production", "→ spamgate, production config → sink", prod)
        if "no-rdns" in paths:
            text = config("production", sink.port).replace("[dns]\n", "[dns]\nreverse_lookup = false\n")
            add("no-rdns", "→ spamgate, production but reverse_lookup = false → sink", d.spamgate("no-rdns", text))
        cheap: Started | None = None
        if paths & {"cheap", "reject"}:
            cheap = d.spamgate("cheap", config("cheap", sink.port))
        if "cheap" in paths and cheap:
            add("cheap", "→ spamgate, cheap filter set (auth policy, headers, RBL) → sink", cheap)
        workers: Started | None = None
        if "workers" in paths:
            label = f"→ spamgate, production + workers = {scenario.WORKERS} → sink"
            text = config("workers", sink.port)
            (work / "workers-check.toml").write_text(text)
            why = _workers_supported(work / "workers-check.toml")
            if why:
                rows["workers"] = Row("workers", label, na="n/a (not implemented)", note=f"check-config: {why[:120]}")
            else:
                workers = d.spamgate("workers", text)
                add("workers", label, workers)
        interleaved(group, ld, d)

        if "production" in paths and prod:
            if "sink" in paths and not rows["production"].na:
                probe = Row("sink@", "")
                latency(probe, sink, ld, rows["production"].lat_rate)
                rows["production"].note += f" sink alone at {probe.lat_rate:.0f}/s: p99 {probe.p99:.1f} ms;"
                rows["sink"].note += f" p99 at spamgate's rate: {probe.p99:.1f} ms;"
                rows["production"].p99_added = rows["production"].p99 - probe.p99
            if args.profile:
                profile(args.profile, prod, ld)
        if "pipelined" in paths and prod:
            label = "→ spamgate, production config, pipelining client (MAIL+RCPT+DATA in one write) → sink"
            rows["pipelined"] = pipelined_cpu(Row("pipelined", label), prod, ld)
        if workers is not None and args.profile:
            profile(args.profile, workers, ld, "workers")
        if paths & {"postfix", "spamgate-postfix"}:
            postfix_paths(paths, rows, d, stack, sink, ld, config)
        if paths & {"spampd", "spamassassin", "spamd"}:
            spam_paths(args, paths, rows, d, stack, sink, ld, config, work)
        if "reject" in paths and cheap:
            listed = next(i for i in ld.corpus if i.kind == "listed")
            row = Row("reject", "reject-early: listed client refused at RCPT (cheap config)", unit="conn/s")
            rows["reject"] = reject_rate(row, cheap, listed, 2 * ld.messages // 3, ld.sessions)
        per_session = math.nan
        if "idle" in paths:
            # a fresh process: after a load, freed buffers would absorb the new sessions
            fresh = d.spamgate("idle", config("production", sink.port))
            load.run_source(fresh.port, 20, 5, ld.size)  # first-use allocations out of the way
            row = Row("idle", f"idle: {args.idle_sessions:,} sessions after EHLO (production config)")
            per_session = idle_memory(row, fresh, args.idle_sessions)
            rows["idle"] = row
    finally:
        stack.close()
        d.stop_all()
        _log_errors(rows, work)
    return finish(rows, per_session)


def postfix_paths(paths: set[str], rows: dict[str, Row], d: Daemons, stack: contextlib.ExitStack, sink: Started,
                  ld: Load, config) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    from tests.integration.services.postfix import running_postfix

    extra = f"relay_domains = bench.test\nrelayhost = [127.0.0.1]:{sink.port}\nmynetworks = 127.0.0.0/8\n"
    pf = stack.enter_context(running_postfix(extra, "spamgate-bench-pf-"))
    time.sleep(0.5)
    master = int((pf.dir / "queue" / "pid" / "master.pid").read_text().split()[0])
    target = Started("postfix", pf.port, master)
    rows["postfix"] = Row("postfix", "→ Postfix alone → sink (accepted by smtpd)")
    group = [Measured(rows["postfix"], target)]
    if "spamgate-postfix" in paths:
        sg = d.spamgate("spamgate-postfix", config("production", pf.port))
        rows["spamgate-postfix"] = Row("spamgate-postfix", "→ spamgate (production) → Postfix → sink")
        group.append(Measured(rows["spamgate-postfix"], sg))
    interleaved(group, ld, d)  # the ratio compares runs of the same minutes


def spam_paths(args: argparse.Namespace, paths: set[str], rows: dict[str, Row], d: Daemons,  # type: ignore[no-untyped-def]
               stack: contextlib.ExitStack, sink: Started, ld: Load, config, work: Path) -> None:  # fmt: skip
    """spampd, spamgate + spamd and spamd alone take their runs in turns (as the sink paths do):
    each ratio compares runs of the same minutes. Each scans `sa_children` messages at once; the
    SMTP paths get `sa_sessions` clients, spamd alone `sa_children` requests in flight."""
    sa = replace(ld, messages=args.sa_messages, sessions=args.sa_sessions, warmup=args.sa_children * 2,
                 latency_n=20, mixed_n=max(40, ld.mixed_n // 10))  # fmt: skip
    group: list[Measured] = []
    others: list[SpamdAlone] = []
    if "spampd" in paths:
        row = Row("spampd", f"→ spampd ({args.sa_children} children) → sink")
        rows["spampd"] = row
        if shutil.which("spampd"):
            group.append(Measured(row, d.spampd(sink.port, args.sa_children), sink))
        else:
            row.na, row.note = "n/a", "spampd not installed (apt-get install spampd)"
    if paths & {"spamassassin", "spamd"}:
        from tests.integration.services.spamd import start_spamd

        spamd = start_spamd(work / "spamd", children=args.sa_children)
        stack.callback(spamd.close)
        assert spamd.proc is not None
        if "spamassassin" in paths:
            sg = d.spamgate("spamassassin", config("spamassassin", sink.port, spamd_port=spamd.port,
                                                   children=args.sa_children))  # fmt: skip
            row = Row("spamassassin",
                      f"→ spamgate, cheap set + spamassassin (spamd, {args.sa_children} at once) → sink")  # fmt: skip
            rows["spamassassin"] = row
            group.append(Measured(row, sg, sink, extra_cpu_pid=spamd.proc.pid))
        if "spamd" in paths:
            row = Row("spamd", f"spamd alone, {args.sa_children} in flight (its capacity)")
            rows["spamd"] = row
            others.append(SpamdAlone(row, spamd.port, spamd.proc.pid, replace(sa, sessions=args.sa_children)))
    interleaved(group, sa, d, others)


def profile(out: Path, target: Started, ld: Load, name: str = "production") -> None:
    """py-spy record of spamgate (and its workers) under one more smtp-source run (after the measured ones)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([spy, "record", "--pid", str(target.pid), "--rate", "250", "--format", fmt,
                               "--output", str(out / f"{name}.{ext}"), "--nonblocking", "--subprocesses"],
                              stdout=subprocess.DEVNULL, stderr=(out / f"py-spy-{name}-{ext}.log").open("wb"))
             for fmt, ext in (("raw", "txt"), ("flamegraph", "svg"))]  # fmt: skip
    time.sleep(1.5)
    load.run_source(target.port, ld.messages * 2, ld.sessions, ld.size)
    for p in procs:
        p.send_signal(signal.SIGINT)
        p.wait(30)


def finish(rows: dict[str, Row], per_session: float) -> tuple[list[Row], list[Target]]:
    g = rows.get
    for key, bases in (
        ("sink", [("naive", g("naive"))]), ("naive", [("naive", g("naive"))]), ("haraka", [("naive", g("naive"))]),
        ("aiosmtpd", [("naive", g("naive"))]), ("streams", [("naive", g("naive"))]),
        ("protocol", [("naive", g("naive"))]),
        ("production", [("naive", g("naive")), ("Haraka", g("haraka"))]), ("cheap", [("naive", g("naive"))]),
        ("no-rdns", [("naive", g("naive")), ("production", g("production"))]),
        ("workers", [("1 worker", g("production"))]), ("postfix", [("Postfix", g("postfix"))]),
        ("spamgate-postfix", [("Postfix", g("postfix"))]), ("spampd", [("spampd", g("spampd"))]),
        ("spamassassin", [("spamd", g("spamd")), ("spampd", g("spampd"))]), ("spamd", [("spamd", g("spamd"))]),
    ):  # fmt: skip
        if key in rows:
            _vs(rows[key], *bases)
    prod = g("production")
    targets = [
        Target("production vs naive forwarder", _ratio(g("production"), g("naive")), "≥ 1.5x"),
        Target("production vs Haraka", _ratio(g("production"), g("haraka")), "≥ 3x"),
        Target(f"workers = {scenario.WORKERS} vs 1 worker", _ratio(g("workers"), g("production")), "≥ 1.6x"),
        Target("spamgate → Postfix vs Postfix alone", _ratio(g("spamgate-postfix"), g("postfix")), "≥ 0.9x"),
        Target("spamgate + SpamAssassin vs spamd capacity", _ratio(g("spamassassin"), g("spamd")), "≥ 0.95x"),
        Target("spamgate + SpamAssassin vs spampd", _ratio(g("spamassassin"), g("spampd")), "≥ 1.5x"),
        Target("spamgate + SpamAssassin vs spampd, mixed corpus", _ratio(g("spamassassin"), g("spampd"), mixed=True),
               "≥ 1.5x"),
        Target("p99 added latency vs sink alone", prod.p99_added if prod else math.nan, "≤ 5 ms", " ms"),
        Target("RSS per idle session", per_session, "≤ 50 KB", " KB"),
    ]
    return [rows[k] for k in PATHS if k in rows], [t for t in targets if not math.isnan(t.measured)]
