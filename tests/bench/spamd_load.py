"""spamd's own capacity: CHECK requests straight to spamd at a fixed concurrency.

One aiospamc Client built once and reused (its per-call helpers build SSL contexts on
every call, ~112 ms of CPU each here: tests/bench/bench_spamd_client.py), like spamgate's filter does.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.bench import procstat
from tests.bench.load import PacedResult, at_rate
from tests.bench.measure import Load
from tests.bench.report import Row

__all__ = ["SpamdAlone", "spamd_burst", "spamd_paced"]


def _client(port: int):  # type: ignore[no-untyped-def]
    from aiospamc.client import Client
    from aiospamc.connections import TcpConnectionManager, Timeout

    return Client(TcpConnectionManager("127.0.0.1", port, timeout=Timeout(total=120, connection=5, response=115)))


async def _check(client, message: bytes) -> None:  # type: ignore[no-untyped-def]
    from aiospamc.requests import Request

    await client.request(Request("CHECK", body=message))


async def _burst(port: int, messages: list[bytes], n: int, concurrency: int) -> float:
    client = _client(port)
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            await _check(client, messages[i % len(messages)])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


def spamd_burst(port: int, messages: list[bytes], n: int, concurrency: int) -> float:
    """Seconds spamd takes to CHECK ``n`` messages with ``concurrency`` requests in flight."""
    return asyncio.run(_burst(port, messages, n, concurrency))


async def _paced(port: int, message: bytes, rate: float, n: int) -> PacedResult:
    client = _client(port)
    result = PacedResult(rate)

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            await _check(client, message)
        except Exception:  # a probe: count and go on
            result.errors += 1
            return
        result.latencies_ms.append(1000 * (time.perf_counter() - t0))

    await at_rate(one, rate, n)
    return result


def spamd_paced(port: int, message: bytes, rate: float, n: int) -> PacedResult:
    return asyncio.run(_paced(port, message, rate, n))


@dataclass
class SpamdAlone:
    """spamd's capacity: CHECK straight to spamd (spamd_load), in turns with the SMTP paths."""

    row: Row
    port: int
    pid: int
    ld: Load
    cpus: list[float] = field(default_factory=list)

    def _guard(self, step: Callable[[], None]) -> None:
        if self.row.na:
            return
        try:
            step()
        except Exception as exc:  # one broken path must not hide the others
            self.row.na, self.row.note = "failed", f"{type(exc).__name__}: {exc}"

    def warm(self) -> None:
        def step() -> None:
            spamd_burst(self.port, [self.ld.probe.body], self.ld.warmup, self.ld.sessions)

        self._guard(step)

    def burst(self) -> None:
        def step() -> None:
            c0 = procstat.cpu_seconds(self.pid)
            self.row.rates.append(self.ld.messages / spamd_burst(self.port, [self.ld.probe.body], self.ld.messages,
                                                                 self.ld.sessions))  # fmt: skip
            self.cpus.append(1000 * (procstat.cpu_seconds(self.pid) - c0) / self.ld.messages)

        self._guard(step)

    def settle(self) -> None:
        def step() -> None:
            row, ld = self.row, self.ld
            row.rate, row.cpu_ms = statistics.median(row.rates), statistics.median(self.cpus)
            res = spamd_paced(self.port, ld.probe.body, row.rate / 2, ld.latency_n)
            row.p50, row.p99, row.lat_rate = res.p50, res.p99, row.rate / 2
            c0 = procstat.cpu_seconds(self.pid)
            row.mixed_rate = ld.mixed_n / spamd_burst(self.port, [i.body for i in ld.corpus], ld.mixed_n, ld.sessions)
            spent = procstat.cpu_seconds(self.pid) - c0
            row.note += f" spamd CPU {spent / ld.mixed_n * 1000:.1f} s per 1,000 mixed msgs;"
            row.rss_mb = procstat.peak_rss_kb(self.pid) / 1024

        self._guard(step)
