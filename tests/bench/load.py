"""The loads every path gets: smtp-source bursts, a paced latency client, the mixed corpus,
a reject-early storm and idle sessions. Everything speaks plain SMTP to 127.0.0.x.

smtp-source (Postfix's C load generator) gives the throughput figure: it costs little
CPU, so on 2 cores it steals less from the proxy than any Python client would. The other
loads need things smtp-source can't do (a source address per client, chosen content,
timing each transaction), so they use the small asyncio client below.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = [
    "SMTP_SOURCE", "CorpusItem", "MixedResult", "PacedResult", "hold_idle_sessions", "mixed_corpus",
    "paced_latency", "percentile", "reject_early", "run_pipelined", "run_source", "transaction",
]

SMTP_SOURCE = "/usr/sbin/smtp-source"
HOST = "127.0.0.1"


def run_source(port: int, n: int, sessions: int, size: int, timeout: float = 600.0) -> float:
    """Send ``n`` messages of ``size`` bytes over ``sessions`` parallel sessions; wall seconds."""
    cmd = [SMTP_SOURCE, "-s", str(sessions), "-m", str(n), "-l", str(size), "-f", "sender@src.test",
           "-t", "rcpt@bench.test", "-M", "client.bench.test", f"{HOST}:{port}"]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"smtp-source exited {res.returncode}: {res.stderr.decode(errors='replace')[-300:]}")
    return elapsed


@dataclass(frozen=True)
class CorpusItem:
    kind: str  # ham | spam | spoofed | listed
    mail_from: str
    rcpt: str
    body: bytes  # CRLF lines, no final "."
    source_ip: str = HOST


def _wire(body: bytes) -> bytes:
    lines = body.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + ln if ln.startswith(b".") else ln for ln in lines]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed by the server")
        if line[3:4] != b"-":
            return int(line[:3])


async def transaction(port: int, item: CorpusItem, limit: float = 60.0) -> tuple[str, int]:
    """One connection, one message; returns (stage, code): the last stage reached and its reply."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, local_addr=(item.source_ip, 0)), limit
    )
    stage, code = "connect", 0
    try:
        async with asyncio.timeout(limit):
            code = await _reply(reader)
            if code != 220:
                return stage, code
            for stage, cmd, want in (
                ("ehlo", b"EHLO client.bench.test\r\n", 250),
                ("mail", f"MAIL FROM:<{item.mail_from}>\r\n".encode(), 250),
                ("rcpt", f"RCPT TO:<{item.rcpt}>\r\n".encode(), 250),
                ("data", b"DATA\r\n", 354),
            ):
                writer.write(cmd)
                code = await _reply(reader)
                if code != want:
                    return stage, code
            writer.write(_wire(item.body))
            stage, code = "dot", await _reply(reader)
            writer.write(b"QUIT\r\n")
            with contextlib.suppress(ConnectionError):
                await _reply(reader)
            return stage, code
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@dataclass
class PacedResult:
    rate: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 0.99)


async def at_rate(one: Callable[[], Awaitable[None]], rate: float, n: int) -> None:
    """Start ``one()`` ``n`` times at a steady ``rate`` per second (not waiting for each), then wait for all."""
    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)


async def _paced(port: int, item: CorpusItem, rate: float, n: int) -> PacedResult:
    result = PacedResult(rate)

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            stage, code = await transaction(port, item)
        except (OSError, TimeoutError):
            result.errors += 1
            return
        if stage == "dot" and code == 250:
            result.latencies_ms.append(1000 * (time.perf_counter() - t0))
        else:
            result.errors += 1

    await at_rate(one, rate, n)
    return result


def paced_latency(port: int, item: CorpusItem, rate: float, n: int) -> PacedResult:
    """Open one connection per message at a steady ``rate``; time each whole transaction."""
    return asyncio.run(_paced(port, item, rate, n))


@dataclass
class MixedResult:
    elapsed: float
    outcomes: Counter[str]  # "kind:stage:code"

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))


async def _mixed(port: int, corpus: list[CorpusItem], n: int, sessions: int) -> MixedResult:
    outcomes: Counter[str] = Counter()
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            item = corpus[i % len(corpus)]
            try:
                stage, code = await transaction(port, item)
                outcomes[f"{item.kind}:{stage}:{code}"] += 1
            except (OSError, TimeoutError) as exc:
                outcomes[f"{item.kind}:error:{type(exc).__name__}"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return MixedResult(time.perf_counter() - t0, outcomes)


async def _pipelined_one(port: int, group: bytes, body: bytes) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        if await _reply(reader) != 220:
            raise RuntimeError("no greeting")
        writer.write(b"EHLO client.bench.test\r\n")
        if await _reply(reader) != 250:
            raise RuntimeError("EHLO refused")
        writer.write(group)
        codes = [await _reply(reader) for _ in range(3)]
        if codes != [250, 250, 354]:
            raise RuntimeError(f"MAIL, RCPT, DATA answered {codes}")
        writer.write(body)
        if (code := await _reply(reader)) != 250:
            raise RuntimeError(f"the message was answered {code}")
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()


async def _pipelined(port: int, item: CorpusItem, n: int, sessions: int) -> float:
    group = f"MAIL FROM:<{item.mail_from}>\r\nRCPT TO:<{item.rcpt}>\r\nDATA\r\n".encode()
    body = _wire(item.body)
    todo = iter(range(n))

    async def worker() -> None:
        for _ in todo:
            await _pipelined_one(port, group, body)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return time.perf_counter() - t0


def run_pipelined(port: int, item: CorpusItem, n: int, sessions: int) -> float:
    """Like run_source, but MAIL, RCPT and DATA go in one write (RFC 2920), as Postfix's smtp client
    sends them, one message per connection; wall seconds. A Python client: slower than smtp-source."""
    return asyncio.run(_pipelined(port, item, n, sessions))


def mixed_corpus(port: int, corpus: list[CorpusItem], n: int, sessions: int) -> MixedResult:
    """``n`` transactions cycling through ``corpus`` over ``sessions`` parallel connections."""
    return asyncio.run(_mixed(port, corpus, n, sessions))


def reject_early(port: int, item: CorpusItem, n: int, sessions: int) -> MixedResult:
    """Like mixed_corpus with one listed client: how fast are connections refused at RCPT?"""
    return mixed_corpus(port, [item], n, sessions)


async def _idle(port: int, count: int, sources: list[str]) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with sem:
            reader, writer = await asyncio.open_connection(HOST, port, local_addr=(sources[i % len(sources)], 0))
            if await _reply(reader) != 220:
                writer.close()
                return
            writer.write(b"EHLO idle.bench.test\r\n")
            if await _reply(reader) == 250:
                writers.append(writer)
            else:
                writer.close()

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    del results  # a refused session simply isn't counted
    return writers


@contextlib.contextmanager
def hold_idle_sessions(port: int, count: int, sources: list[str]):  # type: ignore[no-untyped-def]
    """Open ``count`` sessions (EHLO answered) and keep them open inside the ``with``; yields how many."""
    loop = asyncio.new_event_loop()
    try:
        writers = loop.run_until_complete(_idle(port, count, sources))
        try:
            yield len(writers)
        finally:
            for w in writers:
                w.close()
            loop.run_until_complete(asyncio.sleep(0.2))
    finally:
        loop.close()
