#!/usr/bin/env python3
"""A/B: spamgate's CPU per message in two checkouts, measured in alternating invocations.

    .venv/bin/python tests/bench/ab.py /tmp/base . --pairs 5                 # smtp-source
    .venv/bin/python tests/bench/ab.py /tmp/base . --pairs 4 --client pipelined

BASE and NEW are checkouts with their own ``.venv`` (``pip install -e .``); each side runs its
own ``spamgate`` with the same config (INFO logs, metrics on, no reverse lookup) in front of
smtp-sink, on loopback. A pair measures both sides, the order alternating between pairs (the
first of an invocation tends to come out slower). A side: start, warm up with 500 messages,
then N messages from smtp-source (or the pipelining client of ``load.run_pipelined``), CPU from
/proc before and after, stop. The machine's noise between minutes is as large as most single
changes: judge by the mean over pairs and by how many pairs agree, not by one.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench import load, procstat, scenario  # noqa: E402
from tests.bench.peers import SMTP_SINK, free_port, wait_port  # noqa: E402

CONFIG = """[server]
hostname = "mx.bench.test"
state_dir = "{work}/state-{side}"
log_level = "info"

[[listen]]
host = "127.0.0.1"
port = {port}

[backend]
host = "127.0.0.1"
port = {sink}

[dns]
reverse_lookup = false
nameservers = ["127.0.0.1"]
port = 9

[metrics]
enabled = true
host = "127.0.0.1"
port = {metrics}
"""


def spamgate_exe(checkout: Path) -> Path | None:
    """The checkout's own ``.venv/bin/spamgate``; for this checkout, the running venv's too."""
    own = checkout / ".venv" / "bin" / "spamgate"
    if own.exists():
        return own
    mine = Path(sys.executable).with_name("spamgate")
    return mine if checkout.resolve() == REPO and mine.exists() else None


def measure(side: str, checkout: Path, args: argparse.Namespace, work: Path, sink: int) -> tuple[float, float]:
    """(CPU ms per message, msg/s) of ``checkout``'s spamgate under one run of N messages."""
    port = free_port()
    cfg = work / f"{side}.toml"
    cfg.write_text(CONFIG.format(work=work, side=side, port=port, sink=sink, metrics=free_port()))
    with (work / f"{side}.log").open("ab") as log:
        proc = subprocess.Popen([str(spamgate_exe(checkout)), "run", "--config", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_port(port, proc=proc)
        probe = scenario.probe_message(args.size)

        def send(n: int) -> float:
            if args.client == "pipelined":
                return load.run_pipelined(port, probe, n, args.sessions)
            return load.run_source(port, n, args.sessions, args.size)

        send(500)
        c0 = procstat.cpu_seconds(proc.pid)
        elapsed = send(args.messages)
        cpu = procstat.cpu_seconds(proc.pid) - c0
        return 1000 * cpu / args.messages, args.messages / elapsed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path, help="checkout A (with .venv)")
    ap.add_argument("new", type=Path, help="checkout B (with .venv)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--client", choices=["smtp-source", "pipelined"], default="smtp-source")
    args = ap.parse_args(argv)
    for c in (args.base, args.new):
        if spamgate_exe(c) is None:
            ap.error(f"{c}: no .venv/bin/spamgate (python3 -m venv .venv && .venv/bin/pip install -e .)")
    results: dict[str, list[tuple[float, float]]] = {"base": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="spamgate-ab-") as tmp:
        work = Path(tmp)
        sink_port = free_port()
        sink = subprocess.Popen([SMTP_SINK, "-u", "nobody", "-c", f"127.0.0.1:{sink_port}", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_port(sink_port, proc=sink)
            print(f"{args.client}, {args.messages} messages of {args.size} B over {args.sessions} sessions, "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
            print("pair  side  CPU ms/msg   msg/s")
            for i in range(args.pairs):
                for side in ("base", "new") if i % 2 == 0 else ("new", "base"):
                    cpu, rate = measure(side, args.base if side == "base" else args.new, args, work, sink_port)
                    results[side].append((cpu, rate))
                    print(f"{i + 1:4d}  {side:4s}  {cpu:10.3f}  {rate:6.0f}", flush=True)
        finally:
            sink.terminate()
            sink.wait(10)
    base = statistics.mean(c for c, _ in results["base"])
    new = statistics.mean(c for c, _ in results["new"])
    better = sum(n[0] < b[0] for b, n in zip(results["base"], results["new"], strict=True))
    print(f"mean CPU ms/msg: base {base:.3f}, new {new:.3f} ({100 * (new - base) / base:+.1f} %); "
          f"new cheaper in {better} of {args.pairs} pairs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
