#!/usr/bin/env python3
"""spamgate against its peers, side by side in one run, inside a loopback-only network namespace.

    .venv/bin/python tests/bench/bench.py                 # everything (~10 min on 2 cores)
    .venv/bin/python tests/bench/bench.py --quick         # sink, naive, spamgate production; seconds
    .venv/bin/python tests/bench/bench.py --only sink,naive,production,haraka
    .venv/bin/python tests/bench/bench.py --markdown docs/performance-table.md --update-readme

Needs root (``unshare --net``), Postfix's smtp-source/smtp-sink and NSD; the paths that need
Haraka (npm, installed into a scratch dir before entering the namespace), Postfix, spamd or
spampd are marked n/a when those are missing. Paths (keys for --only):

  sink              smtp-source -> smtp-sink: this machine's SMTP ceiling on loopback
  naive             -> naive aiosmtpd/aiosmtplib forwarder -> sink
  haraka            -> Haraka (smtp_forward) -> sink
  aiosmtpd          -> aiosmtpd alone answering 250, relaying nothing: the server library's own floor
  streams           -> asyncio streams answering 250 (a task per connection, readuntil per line): that shape's floor
  protocol          -> a bare asyncio Protocol answering 250: asyncio's and the kernel's floor
  production        -> spamgate -> sink: INFO logs, metrics on, reverse DNS on (local NSD)
  pipelined         the production spamgate with a pipelining client (MAIL, RCPT, DATA in one write, as
                    Postfix sends them); a Python client, so compare it between builds (A/B)
  no-rdns           -> spamgate, production config with reverse_lookup = false (what the lookup costs)
  cheap             -> spamgate with local_sender + headers + rbl (local NSD) -> sink
  workers           -> spamgate with [server] workers = 2 (a supervisor and two worker processes)
  postfix           -> Postfix -> sink, and spamgate-postfix: -> spamgate -> Postfix -> sink
  spampd            -> spampd -> sink; spamassassin: -> spamgate (cheap set + spamd) -> sink;
  spamd             spamd alone at the same concurrency (its capacity)
  reject            connections/s refused at RCPT for a DNSBL-listed client (cheap config)
  idle              RSS with 1,000 sessions open after EHLO, per session (production config)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench import scenario  # noqa: E402
from tests.bench.measure import Load  # noqa: E402
from tests.bench.netns import NETNS_ENV, enter_netns  # noqa: E402
from tests.bench.paths import PATHS, run_paths  # noqa: E402
from tests.bench.peers import install_haraka  # noqa: E402
from tests.bench.report import markdown, stamp, text_table, update_readme  # noqa: E402

ALL = PATHS
QUICK = ["sink", "naive", "production"]


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny load, 1 run, sink/naive/production only (CI smoke)")
    ap.add_argument("--only", help=f"comma-separated paths ({','.join(ALL)})")
    ap.add_argument("--messages", type=int, default=3000, help="N messages per smtp-source run (default 3000)")
    ap.add_argument("--sessions", type=int, default=20, help="S parallel sessions (default 20)")
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes (default 4096)")
    ap.add_argument("--runs", type=int, default=3, help="runs per path; the median is reported (default 3)")
    ap.add_argument("--sa-messages", type=int, default=120, help="N for the SpamAssassin paths (default 120)")
    ap.add_argument("--sa-children", type=int, default=5,
                    help="scanning slots: spamd's and spampd's children, spamgate's max_concurrency (default 5)")
    ap.add_argument("--sa-sessions", type=int,
                    help="smtp-source sessions on the SpamAssassin SMTP paths (default: twice --sa-children)")
    ap.add_argument("--idle-sessions", type=int, default=1000)
    ap.add_argument("--latency-n", type=int, default=2000,
                    help="transactions of the paced latency client per path; p99 is the 20th-worst of the default 2000")
    ap.add_argument("--latency-cap", type=float, default=400.0,
                    help="highest rate the paced latency client is asked for, msg/s (default 400)")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    ap.add_argument("--update-readme", action="store_true", help="rewrite README.md's bench:begin/end block")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="after measuring, py-spy record spamgate (production, workers) under one more run into DIR")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, configs)")
    args = ap.parse_args(argv)
    args.paths = QUICK if args.quick else ALL
    if args.only:
        args.paths = [p.strip() for p in args.only.split(",") if p.strip()]
        unknown = set(args.paths) - set(ALL)
        if unknown:
            ap.error(f"unknown path(s) {sorted(unknown)}; known: {','.join(ALL)}")
    if args.sa_sessions is None:
        args.sa_sessions = 2 * args.sa_children
    if args.quick:
        args.messages, args.sessions, args.runs, args.sa_messages, args.idle_sessions = 100, 5, 1, 10, 50
    return args


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.machine())  # fmt: skip
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB, Linux {platform.release()}, Python {platform.python_version()}"


def main(argv: list[str]) -> int:
    args = parse(argv)
    if os.environ.get(NETNS_ENV) != "1" and "haraka" in args.paths:
        why = install_haraka()  # npm needs the network: before the namespace
        if why:
            print(f"haraka: {why}", file=sys.stderr)
    enter_netns(__file__, argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, 8192)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))  # 1,000 idle sessions, both ends

    probe = scenario.probe_message(args.size)
    ld = Load(args.messages, args.sessions, args.size, args.runs, warmup=10 if args.quick else 200,
              latency_n=20 if args.quick else args.latency_n, latency_cap=args.latency_cap,
              mixed_n=40 if args.quick else 800, corpus=tuple(scenario.corpus(args.size)), probe=probe)  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="spamgate-bench-"))
    work.chmod(0o755)
    try:
        rows, targets = run_paths(args, ld, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    when = stamp()
    header = (f"N={args.messages} messages of {args.size} B over {args.sessions} sessions (SpamAssassin paths: "
              f"N={args.sa_messages} over {args.sa_sessions}, {args.sa_children} scanning at once), median of "
              f"{args.runs}; p50/p99 at half of the path's max rate (paced client, capped at "
              f"{args.latency_cap:.0f}/s); {when}; {machine()}")  # fmt: skip
    print(text_table(rows, targets, header))
    md = markdown(rows, targets, header)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md)
    if args.update_readme:
        update_readme(REPO / "README.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
