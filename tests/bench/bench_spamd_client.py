#!/usr/bin/env python3
"""What one spamd scan costs spamgate's side: aiospamc's per-call helper against the filter.

    .venv/bin/python tests/bench/bench_spamd_client.py                   # own spamd, median of 30
    .venv/bin/python tests/bench/bench_spamd_client.py --runs 5 --markdown /tmp/t.md
    .venv/bin/python tests/bench/bench_spamd_client.py --spamd 127.0.0.1:783   # a running spamd

Without ``--spamd`` it needs root: it re-runs itself inside ``unshare --net`` (only 127.0.0.1
exists there) and starts a private spamd (``-L``, the rules Debian ships) on a loopback port,
the way the integration suite does (tests/integration/services/spamd.py). With ``--spamd`` it
only talks to that address, which must be a loopback one.

For GTUBE and SpamAssassin's sample non-spam message, one call at a time, each of:

  aiospamc.check()     aiospamc's per-call helper: a new client (and two SSL contexts) per call
  reused Client        one aiospamc Client built once, CHECK (what the filter's client does)
  the filter           spamgate's spamassassin filter's check() at DATA (SYMBOLS, its one client)

and reports the median wall time and the median client CPU (this process's CPU time: what
the event loop could not spend on other sessions) of ``--runs`` calls, after a warm-up.
The rest of the wall time is spamd's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.netns import enter_netns  # noqa: E402
from tests.bench.report import publish, stamp  # noqa: E402

EXAMPLES = Path("/usr/share/doc/spamassassin/examples")
MESSAGES = {"GTUBE": EXAMPLES / "sample-spam.txt", "sample non-spam": EXAMPLES / "sample-nonspam.txt"}
WARMUP = 3
ROUNDS = 5

Call = Callable[[bytes], Awaitable[object]]


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="calls per cell; the median is reported (default 30)")
    ap.add_argument("--spamd", metavar="HOST:PORT", help="use this running spamd (loopback) instead of starting one")
    ap.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as Markdown to FILE")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if args.spamd:
        host, _, port = args.spamd.rpartition(":")
        try:
            if not ipaddress.ip_address(host).is_loopback:
                ap.error(f"--spamd {args.spamd}: only loopback addresses (this benchmark stays on 127.0.0.1)")
            args.address = (host, int(port))
        except ValueError:
            ap.error(f"--spamd {args.spamd}: expected IP:PORT, e.g. 127.0.0.1:783")
    return args


def helper_call(host: str, port: int) -> Call:
    import aiospamc
    from loguru import logger

    # aiospamc logs every call through loguru (to stderr by default): silenced so the figure is
    # the helper's own cost, not a terminal's. Its log calls themselves still run.
    logger.remove()

    async def call(raw: bytes) -> object:
        return await aiospamc.check(raw, host=host, port=port)

    return call


def client_call(host: str, port: int) -> Call:
    from spamgate.filters.services.spamd_client import SpamdClient, SpamdSettings

    client = SpamdClient(SpamdSettings(host, port, timeout=60.0))

    async def call(raw: bytes) -> object:
        from aiospamc.requests import Request

        return await client._request(Request("CHECK", body=raw))

    return call


def filter_call(host: str, port: int) -> Call:
    from spamgate.filters.sdk.api import FilterEnv, Phase
    from spamgate.filters.sdk.metrics import MemoryMetrics
    from spamgate.filters.sdk.testing import make_context
    from spamgate.filters.spamassassin.filter import SpamAssassinFilter

    flt = SpamAssassinFilter("spamassassin", {"host": host, "port": port, "scan_timeout": 60.0},
                             FilterEnv(metrics=MemoryMetrics()))  # fmt: skip
    received = b"Received: from client.example.org (client.example.org [192.0.2.10])\r\n\tby mx.example.edu\r\n"

    async def call(raw: bytes) -> object:
        verdict = await flt.check(Phase.DATA, make_context(Phase.DATA, message=raw, received=received))
        if not any(s.name == "SPAMD" for s in verdict.symbols):
            raise RuntimeError(f"the filter did not scan: {verdict}")
        return verdict

    return call


async def measure(
    calls: dict[str, Call], messages: dict[str, bytes], runs: int
) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(method, message) -> [(wall s, cpu s)].

    Each method runs its calls in blocks, so the garbage it leaves behind is collected during
    its own calls: an aiospamc per-call client (with its SSL contexts) sits in reference cycles
    that the cyclic collector frees later, ~10 ms of CPU in whatever runs then (one call each
    in turn made the reused client look 1.5 ms dearer than it is). The blocks of the methods
    take turns over ``ROUNDS`` rounds, so a change in the machine's load hits all of them alike.
    """
    out: dict[tuple[str, str], list[tuple[float, float]]] = {(c, m): [] for c in calls for m in messages}
    per_round = -(-runs // ROUNDS)
    for r in range(ROUNDS):
        for cname, call in calls.items():
            gc.collect()  # the previous block's leftovers, outside any timing
            n = min(per_round, runs - r * per_round) + (WARMUP if r == 0 else 0)
            for i in range(max(n, 0)):
                for mname, raw in messages.items():
                    w0, c0 = time.perf_counter(), time.process_time()
                    await call(raw)
                    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                    if r > 0 or i >= WARMUP:
                        out[(cname, mname)].append((wall, cpu))
    return out


def table(results: dict[tuple[str, str], list[tuple[float, float]]], methods: list[str], msgs: list[str]) -> str:
    def ms(v: float) -> str:
        return f"{v * 1000:.1f} ms"

    head = "| per message | " + " | ".join(msgs) + " |"
    lines = [head, "|---|" + "---:|" * len(msgs)]
    for method in methods:
        for what, idx in (("wall time", 0), ("client CPU", 1)):
            cells = [ms(statistics.median(r[idx] for r in results[(method, m)])) for m in msgs]
            lines.append(f"| {method}, {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


async def run(host: str, port: int, runs: int) -> str:
    messages = {name: path.read_bytes() for name, path in MESSAGES.items()}
    calls = {
        "`aiospamc.check()`": helper_call(host, port),
        "one reused aiospamc `Client` (CHECK)": client_call(host, port),
        "the filter (`filters/spamassassin/`)": filter_call(host, port),
    }
    results = await measure(calls, messages, runs)
    return table(results, list(calls), list(messages))


def main(argv: list[str]) -> int:
    args = parse(argv)
    missing = [str(p) for p in MESSAGES.values() if not p.exists()]
    if missing:
        raise SystemExit(f"SpamAssassin's sample messages are missing: {missing} (apt-get install spamassassin)")
    spamd = None
    if args.spamd:
        host, port = args.address
        where = f"spamd at {host}:{port}"
    else:
        enter_netns(__file__, argv)  # or pass --spamd HOST:PORT to run without root
        from tests.integration.services.spamd import start_spamd

        work = Path(tempfile.mkdtemp(prefix="spamgate-bench-spamd-"))
        spamd = start_spamd(work)
        host, port = "127.0.0.1", spamd.port
        where = "a private spamd (-L, --max-children 5, Debian's shipped rules) in `unshare --net`"
    try:
        md = asyncio.run(run(host, port, args.runs))
    finally:
        if spamd is not None:
            spamd.close()
            shutil.rmtree(work, ignore_errors=True)
    cores = os.cpu_count()
    header = f"Median of {args.runs} calls per cell, one at a time, against {where}; {cores} cores; {stamp()}.\n\n"
    publish(header + md, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
