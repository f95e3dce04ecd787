#!/usr/bin/env python3
"""What DNS lists cost the rbl filter: round trips and queries per client (issue 15's target).

    .venv/bin/python tests/bench/bench_dnsbl.py                       # median of 30, ~20 s
    .venv/bin/python tests/bench/bench_dnsbl.py --runs 5 --delay-ms 0 --markdown /tmp/t.md

Needs root and NSD: it re-runs itself inside ``unshare --net`` (only 127.0.0.1 exists) and
starts NSD (tests/integration/services/dns.py) serving five test DNSBL zones, bl1.test ..
bl5.test, each listing the same clients (127.2.x.y; 127.1.x.y are not listed).

It calls the filter itself (filters/rbl/), as the engine does: a connect check for a client
the resolver has never seen, with 1 list and with 5 lists, then the same client again in a new
session; the same for a listed client, whose refusal at RCPT also fetches the TXT record for
the reply. The baseline, measured in the same run, is the same 5 lookups awaited one after
another (what the filter would cost without concurrency).

Per row: the median wall time of the check, and the queries it caused, counted twice: by
spamgate (``spamgate_dns_queries_total``, what the resolver sent) and by NSD itself
(``nsd-control stats_noreset``, what the server answered).

On loopback a DNS round trip takes well under a millisecond, less than the client's own CPU
per query, so the direct pass cannot show round trips. The second pass (``--delay-ms``,
default 20) puts a small UDP relay (tests/bench/dns_relay.py, its own process) in front of
NSD that holds each query that long, like a local resolver asking a DNSBL's servers: there a
time near the 1-list time means one round trip, and the baseline shows what five cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from spamgate.filters.rbl.filter import RblFilter  # noqa: E402
from spamgate.filters.sdk.api import Decision, DnsSettings, FilterEnv, Phase  # noqa: E402
from spamgate.filters.sdk.metrics import MemoryMetrics  # noqa: E402
from spamgate.filters.sdk.testing import make_context  # noqa: E402
from spamgate.filters.services.dns import CachingResolver, DnsAnswer  # noqa: E402
from tests.bench.dns_relay import start_relay  # noqa: E402
from tests.bench.netns import enter_netns  # noqa: E402
from tests.bench.report import publish, stamp  # noqa: E402
from tests.integration.services.dns import DnsServer, start_dns, zone  # noqa: E402
from tests.integration.services.process import stop_process  # noqa: E402

T = TypeVar("T")

ZONES = tuple(f"bl{i}.test" for i in range(1, 6))
WARMUP = 3
RDTYPES = ("A", "TXT")
RESULTS = ("ok", "nxdomain", "nodata", "timeout", "error")


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="checks per row; the median is reported (default 30)")
    ap.add_argument(
        "--delay-ms",
        type=float,
        default=20.0,
        help="the relay's hold per query in the second pass; 0 skips that pass (default 20)",
    )
    ap.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table as Markdown to FILE")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.delay_ms < 0:
        ap.error("--runs must be at least 1 and --delay-ms at least 0")
    return args


# -- the measurement -----------------------------------------------------------------------------


def listed_ip(i: int) -> str:
    return f"127.2.{i // 250}.{i % 250 + 1}"


def clean_ip(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def zones(n_listed: int) -> dict[str, str]:
    recs = []
    for i in range(n_listed):
        rev = ".".join(reversed(listed_ip(i).split(".")))
        recs += [f"{rev} A 127.0.0.2", f'{rev} TXT "listed in the benchmark list"']
    return {z: zone(z, recs) for z in ZONES}


@dataclass
class Row:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # this process's CPU time
    sent: list[int] = field(default_factory=list)  # spamgate_dns_queries_total delta
    answered: list[int] = field(default_factory=list)  # NSD's num.queries delta


class Pass:
    """One pass against one DNS address: fresh resolvers, so every first lookup is a miss."""

    def __init__(self, port: int, server: DnsServer, runs: int) -> None:
        self.server, self.runs = server, runs
        self.metrics = MemoryMetrics()
        self.dns = DnsSettings(nameservers=("127.0.0.1",), port=port, timeout=2.0, attempts=1)

        def rbl(zones: tuple[str, ...]) -> RblFilter:
            env = FilterEnv(dns=self.dns, metrics=self.metrics, resolver=CachingResolver(self.dns, self.metrics))
            lists = [{"zone": z, "weight": 1.0} for z in zones]
            return RblFilter("rbl", {"lists": lists, "skip_private": False, "reject_score": 1.0}, env)

        self.one, self.five = rbl(ZONES[:1]), rbl(ZONES)
        self.sequential = CachingResolver(self.dns, self.metrics)
        self.rows: dict[str, Row] = {}

    def sent(self) -> int:
        return int(sum(self.metrics.value("spamgate_dns_queries_total", t, r) for t in RDTYPES for r in RESULTS))

    async def timed(self, key: str, call: Callable[[], Awaitable[T]], record: bool) -> T:
        """Only ``call`` is timed; the query counts are read before and after it."""
        before_sent, before_answered = self.sent(), self.server.queries()
        w0, c0 = time.perf_counter(), time.process_time()
        result = await call()
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if record:
            row = self.rows.setdefault(key, Row())
            row.walls.append(wall)
            row.cpus.append(cpu)
            row.sent.append(self.sent() - before_sent)
            row.answered.append(self.server.queries() - before_answered)
        return result

    async def connect(self, key: str, flt: RblFilter, ip: str, session: str, listed: bool, record: bool) -> None:
        ctx = make_context(Phase.CONNECT, peer_ip=ip, session_id=session)
        verdict = await self.timed(key, partial(flt.check, Phase.CONNECT, ctx), record)
        want = len(flt.options.lists) if listed else 0
        if len(verdict.symbols) != want:  # the benchmark measures what it says, or stops
            raise RuntimeError(f"{ip}: expected {want} listings, got {verdict.symbols}")

    async def rcpt(self, key: str, ip: str, session: str, record: bool) -> None:
        ctx = make_context(Phase.RCPT, peer_ip=ip, session_id=session, rcpt="user@example.edu")
        verdict = await self.timed(key, partial(self.five.check, Phase.RCPT, ctx), record)
        if verdict.decision is not Decision.REJECT or "blocked using bl1.test" not in str(verdict.reply):
            raise RuntimeError(f"{ip}: not refused at RCPT: {verdict}")

    async def in_turn(self, key: str, ip: str, listed: bool, record: bool) -> None:
        rev = ".".join(reversed(ip.split(".")))

        async def lookups() -> list[DnsAnswer]:
            return [await self.sequential.query(f"{rev}.{z}", "A") for z in ZONES]

        answers = await self.timed(key, lookups, record)
        if {a.status for a in answers} != {"ok" if listed else "nxdomain"}:
            raise RuntimeError(f"{ip}: unexpected answers {answers}")

    async def run(self) -> dict[str, Row]:
        kinds = ((False, "new client, not listed", clean_ip), (True, "new listed client", listed_ip))
        for i in range(WARMUP + self.runs):
            rec = i >= WARMUP
            for listed, kind, ip_of in kinds:
                a, b, c = ip_of(3 * i), ip_of(3 * i + 1), ip_of(3 * i + 2)
                s, again = f"{kind}-{i}", kind.replace("new", "same", 1) + " again, new session"
                await self.connect(f"{kind}: connect, 1 list", self.one, a, s, listed, rec)
                await self.connect(f"{kind}: connect, 5 lists", self.five, b, s, listed, rec)
                await self.in_turn(f"{kind}: 5 lookups one after another (baseline)", c, listed, rec)
                if listed:
                    await self.rcpt(f"{kind}: refused at RCPT, 5 lists (TXT for the reply)", b, s, rec)
                # The same client in a new session: the per-session memo is empty, the shared cache is not.
                await self.connect(f"{again}: connect, 5 lists", self.five, b, s + "b", listed, rec)
                if listed:
                    await self.rcpt(f"{again}: refused at RCPT, 5 lists", b, s + "b", rec)
        return self.rows


# -- the report ----------------------------------------------------------------------------------


def count(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{statistics.median(values):g} ({lo}-{hi})"


def table(direct: dict[str, Row], relayed: dict[str, Row] | None, delay_ms: float) -> str:
    relay_col = f" | wall ms, NSD behind a {delay_ms:g} ms relay" if relayed else ""
    lines = [
        f"| check | wall ms, NSD on loopback | client CPU ms{relay_col} | queries sent (spamgate) "
        "| queries NSD answered |",
        "|---|---:|---:|" + ("---:|" if relayed else "") + "---:|---:|",
    ]
    for key, row in direct.items():
        cells = [f"{statistics.median(row.walls) * 1000:.2f}", f"{statistics.median(row.cpus) * 1000:.2f}"]
        sent, answered = list(row.sent), list(row.answered)
        if relayed:  # the counts of both passes: they must agree
            cells.append(f"{statistics.median(relayed[key].walls) * 1000:.1f}")
            sent += relayed[key].sent
            answered += relayed[key].answered
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {count(sent)} | {count(answered)} |")
    return "\n".join(lines) + "\n"


def summary(direct: dict[str, Row], relayed: dict[str, Row] | None, delay_ms: float) -> str:
    def wall(rows: dict[str, Row], key: str) -> float:
        return statistics.median(rows[key].walls) * 1000

    out = []
    for kind in ("new client, not listed", "new listed client"):
        one, five, turn = (f"{kind}: connect, 1 list", f"{kind}: connect, 5 lists",
                           f"{kind}: 5 lookups one after another (baseline)")  # fmt: skip
        line = (f"- {kind}, 5 lists vs 1 list: loopback {wall(direct, five) / wall(direct, one):.2f}x "
                f"(in turn {wall(direct, turn) / wall(direct, one):.2f}x)")  # fmt: skip
        if relayed:
            extra, extra_turn = wall(relayed, five) - wall(relayed, one), wall(relayed, turn) - wall(relayed, one)
            verdict = "met" if extra < delay_ms else "not met"
            line += (f"; behind the {delay_ms:g} ms relay {wall(relayed, five) / wall(relayed, one):.2f}x "
                     f"(in turn {wall(relayed, turn) / wall(relayed, one):.2f}x): 5 lists take {extra:.1f} ms more "
                     f"than 1 (in turn {extra_turn:.1f} ms); one round trip (less than one more {delay_ms:g} ms "
                     f"round trip): {verdict}")  # fmt: skip
        out.append(line)
    rows = [relayed] if relayed else []
    again = [r for rs in (direct, *rows) for k, r in rs.items() if "again" in k]
    repeated = max(max(r.sent + r.answered) for r in again)
    out.append(f"- a repeated client, queries per check at most {repeated} (spamgate and NSD): "
               f"{'met' if repeated == 0 else 'not met'}")  # fmt: skip
    return "\n".join(out) + "\n"


async def measure(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="spamgate-bench-nsd-"))
    server = start_dns(zones(3 * (WARMUP + args.runs)), work, stats=True)
    relay = None
    try:
        direct = await Pass(server.port, server, args.runs).run()
        relayed = None
        if args.delay_ms > 0:
            relay, port = start_relay(server.port, args.delay_ms, f"{ZONES[0]}.")
            relayed = await Pass(port, server, args.runs).run()
    finally:
        stop_process(relay, 5)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return table(direct, relayed, args.delay_ms) + "\n" + summary(direct, relayed, args.delay_ms)


def main(argv: list[str]) -> int:
    args = parse(argv)
    enter_netns(__file__, argv)
    md = asyncio.run(measure(args))
    header = (
        f"The rbl filter's connect/RCPT checks against NSD serving 5 test lists in `unshare --net`; "
        f"median of {args.runs} per row, a new client IP per check; {os.cpu_count()} cores; {stamp()}.\n\n"
    )
    publish(header + md, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
