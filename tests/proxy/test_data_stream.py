"""DATA read in blocks (proxy.data_stream) against aiosmtpd's own line-by-line smtp_DATA, on the same bytes.

A differential test: random streams built around the edges (lines at and around the length
limit, bare CR and LF next to dots and CRLFs, dot-stuffed lines, a size limit crossed before or
after a long line, pipelined bytes after the end), arriving in random pieces. aiosmtpd's real
smtp_DATA and read_data must give the same verdict, the same message and leave the same bytes
in the reader.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from spamgate.proxy.data_stream import DataState, DataStream, read_data

REPLY = {"500 Line too long (see RFC5321 4.5.3.1.6)": DataState.TOO_LONG,
         "552 Error: Too much mail data": DataState.TOO_MUCH}


class _Sink:
    content: bytes | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.content = envelope.original_content
        return "250 got"


async def _feed(reader: asyncio.StreamReader, data: bytes, cuts: list[int]) -> None:
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        reader.feed_data(data[pos:cut])
        pos = cut
        await asyncio.sleep(0)
    reader.feed_eof()


async def _aiosmtpd(smtp: SMTP, data: bytes, cuts: list[int], line_limit: int,
                    size_limit: int) -> tuple[DataState, bytes | None, bytes]:
    pushed: list[str] = []

    async def push(status: str) -> None:
        pushed.append(status)

    smtp.push = push  # type: ignore[method-assign]
    smtp._reader = reader = asyncio.StreamReader(limit=line_limit)
    smtp.line_length_limit = line_limit
    smtp.data_size_limit = size_limit or None  # type: ignore[assignment]
    smtp.envelope = Envelope()
    smtp.envelope.rcpt_tos = ["a@example.org"]
    feeder = asyncio.ensure_future(_feed(reader, data, cuts))
    await smtp.smtp_DATA("")
    await feeder
    state = REPLY.get(pushed[-1], DataState.NOMINAL)
    assert state is not DataState.NOMINAL or pushed[-1] == "250 got", pushed
    content = smtp.event_handler.content if state is DataState.NOMINAL else None
    smtp.event_handler.content = None
    return state, content, await reader.read()


async def _ours(data: bytes, cuts: list[int], line_limit: int,
                size_limit: int) -> tuple[DataState, bytes | None, bytes]:
    reader = asyncio.StreamReader(limit=line_limit)
    feeder = asyncio.ensure_future(_feed(reader, data, cuts))
    stream = DataStream(line_limit, size_limit or None)
    await read_data(reader, stream, lambda: True)
    await feeder
    return stream.state, stream.content() if stream.state is DataState.NOMINAL else None, await reader.read()


_PIECES = [b"a", b"b", b".", b"..", b"\r", b"\n", b"\r\n", b" ", b"x" * 7]


def _stream(rng: random.Random, line_limit: int) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        if kind < 0.15:
            lines.append(b"." * rng.randint(1, 3) + b"".join(rng.choices(_PIECES, k=rng.randint(0, 4))))
        elif kind < 0.35:  # at and around the length limit
            lines.append(b"y" * (line_limit + rng.randint(-4, 3)))
        elif kind < 0.45:
            lines.append(b"z" * rng.randint(line_limit, 4 * line_limit) + rng.choice([b"", b".", b"\r"]))
        else:
            lines.append(b"".join(rng.choices(_PIECES, k=rng.randint(0, 8))))
    return b"\r\n".join(lines) + (b"\r\n" if lines else b"") + b".\r\nQUIT\r\n"


def test_block_reading_matches_aiosmtpd_line_by_line() -> None:
    async def run() -> int:
        smtp = SMTP(_Sink())
        smtp.transport = object()  # type: ignore[assignment]
        smtp.session = Session(asyncio.get_running_loop())
        smtp.session.host_name = "client.test"
        rng = random.Random(15)
        seen: set[DataState] = set()
        for case in range(2000):
            line_limit = rng.randint(8, 40)
            size_limit = rng.choice([0, rng.randint(10, 300)])
            data = _stream(rng, line_limit)
            cuts = rng.sample(range(len(data)), k=min(len(data), rng.randint(0, 6)))
            want = await _aiosmtpd(smtp, data, cuts, line_limit, size_limit)
            got = await _ours(data, cuts, line_limit, size_limit)
            assert got == want, (case, data, cuts, line_limit, size_limit)
            seen.add(want[0])
        assert seen == set(DataState)  # every verdict was exercised
        return 0

    asyncio.run(run())


@pytest.mark.parametrize(("data", "content"), [
    (b".\r\n", b""),
    (b"..\r\n.\r\n", b".\r\n"),
    (b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n"),
    (b"bare\n.\r\nstill in\r\n.\r\n", b"bare\n.\r\nstill in\r\n"),  # LF. CRLF is not the end
    (b"cr\r.\r\n.\r\n", b"cr\r.\r\n"),
    (b"end.\r\n.\r\n", b"end.\r\n"),
])
async def test_end_and_dot_stuffing(data: bytes, content: bytes) -> None:
    assert await _ours(data + b"QUIT\r\n", [], 100, 0) == (DataState.NOMINAL, content, b"QUIT\r\n")
