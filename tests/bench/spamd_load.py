"""spamd's own capacity: CHECK requests straight to spamd at a fixed concurrency.

One aiospamc Client built once and reused (its per-call helpers build SSL contexts on
every call, ~112 ms of CPU each here: tests/bench/bench_spamd_client.py), like spamgate's filter does.
"""

from __future__ import annotations

import asyncio
import time

from tests.bench.load import PacedResult, at_rate

__all__ = ["spamd_burst", "spamd_paced"]


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
