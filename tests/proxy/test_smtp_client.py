"""The relay's SMTP client against scripted servers: replies in order, pipelining, every way a backend breaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spamgate.proxy.smtp_client import (
    BackendClosed,
    BackendProtocolError,
    BackendTimeout,
    Connection,
    SmtpReply,
    _ReplyQueue,
    command_line,
    open_connection,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.port = 0
        self.server: asyncio.Server | None = None
        self.received: list[bytes] = []

    async def __aenter__(self) -> Scripted:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await self.script(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(run, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def _connect(server: Scripted, reply_timeout: float = 2) -> Connection:
    return await open_connection("127.0.0.1", server.port, 2, reply_timeout)


EHLO = b"250-mta.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-XCLIENT NAME ADDR\r\n250 CHUNKING\r\n"


def _answering(*replies: bytes) -> Script:
    """A server that greets, answers each command line with the next of ``replies``, then waits."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mta.test ESMTP\r\n")
        for reply in replies:
            await reader.readline()
            writer.write(reply)
        await reader.read()

    return script


async def _greet_and_ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 mta.test ESMTP\r\n")
    assert (await reader.readline()).startswith(b"EHLO ")
    writer.write(EHLO)


async def test_ehlo_extensions_and_pipelined_replies_in_order() -> None:
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _greet_and_ehlo(reader, writer)
        seen.append(await reader.readline())
        seen.append(await reader.readline())
        # Both replies in one write, as Postfix flushes pipelined replies.
        writer.write(b"250 2.1.0 Ok\r\n550-5.1.1 no such user\r\n550 5.1.1 really\r\n")
        await reader.read()

    async with Scripted(script) as server:
        conn = await _connect(server)
        reply = await conn.ehlo("gate.test")
        assert reply.code == 250 and reply.message.startswith("mta.test\nPIPELINING")
        assert conn.extensions == {"pipelining": "", "size": "10240000", "xclient": "NAME ADDR", "chunking": ""}
        assert conn.supports("chunking") and not conn.supports("starttls")
        conn.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n", replies=2)
        assert not conn.idle
        assert await conn.reply() == SmtpReply(250, "2.1.0 Ok")
        assert await conn.reply() == SmtpReply(550, "5.1.1 no such user\n5.1.1 really")
        assert conn.idle
        conn.close()
    assert seen == [b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<x@y.example>\r\n"]


async def test_replies_arriving_one_byte_at_a_time() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for b in b"220-mta.test\r\n220 ESMTP\r\n":
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()

    async with Scripted(script) as server:
        conn = await _connect(server)
        assert conn.idle
        conn.close()


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_segmentation_gives_the_same_replies(cuts: list[int]) -> None:
    stream = b"220 hi\r\n250-a\r\n250-b c\r\n250 d\r\n354 go\r\n250 2.0.0 Ok: queued as X\r\n"
    loop = asyncio.new_event_loop()
    try:
        q = _ReplyQueue(loop)
        q.owed = 4
        pos = 0
        for n in cuts:
            q.data_received(stream[pos:pos + n])
            pos += n
        q.data_received(stream[pos:])
        assert q.error is None
        assert list(q._replies) == [SmtpReply(220, "hi"), SmtpReply(250, "a\nb c\nd"), SmtpReply(354, "go"),
                                    SmtpReply(250, "2.0.0 Ok: queued as X")]
    finally:
        loop.close()


async def test_a_reply_nobody_asked_for_breaks_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mta.test ESMTP\r\n")
        await asyncio.sleep(0.05)
        writer.write(b"421 4.4.2 idle too long\r\n")
        await reader.read()

    async with Scripted(script) as server:
        conn = await _connect(server)
        await asyncio.sleep(0.2)
        assert not conn.is_connected and not conn.idle
        with pytest.raises(BackendProtocolError):
            conn.send(b"NOOP\r\n")


async def test_no_reply_in_time_is_a_timeout_and_closes() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mta.test ESMTP\r\n")
        await reader.read()

    async with Scripted(script) as server:
        conn = await _connect(server, reply_timeout=0.2)
        with pytest.raises(BackendTimeout):
            await conn.command(b"NOOP")
        assert not conn.is_connected




async def test_the_timeout_counts_per_reply_not_per_connection() -> None:
    """Each reply gets the whole timeout: three slow replies in a row, each in time, add up to more than it."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mta.test ESMTP\r\n")
        for _ in range(3):
            await reader.readline()
            await asyncio.sleep(0.15)
            writer.write(b"250 ok\r\n")
        await reader.read()

    async with Scripted(script) as server:
        conn = await _connect(server, reply_timeout=0.3)
        for _ in range(3):
            assert (await conn.command(b"NOOP")).code == 250
        assert conn.idle


async def test_the_timeout_still_fires_after_an_idle_spell() -> None:
    """The timer armed by the last wait lapses while nobody waits; the next wait is timed from its own start."""

    async with Scripted(_answering(b"250 ok\r\n")) as server:
        conn = await _connect(server, reply_timeout=0.2)
        assert (await conn.command(b"NOOP")).code == 250
        await asyncio.sleep(0.3)  # longer than the timeout: an idle connection does not time out
        assert conn.idle
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(BackendTimeout, match=r"in 0\.2s"):
            await conn.command(b"NOOP")
        assert 0.15 < loop.time() - start < 1.5
        assert not conn.is_connected


async def test_backend_closing_mid_reply() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mta.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-half a rep")

    async with Scripted(script) as server:
        conn = await _connect(server)
        with pytest.raises(BackendClosed):
            await conn.command(b"EHLO x")
        assert not conn.is_connected


@pytest.mark.parametrize("garbage", [b"hello there\r\n", b"25\r\n", b"250x\r\n", b"250-" + b"x" * 9000 + b"\r\n",
                                     b"250 " + b"y" * 9000])
async def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    async with Scripted(_answering(garbage)) as server:
        conn = await _connect(server)
        with pytest.raises(BackendProtocolError):
            await conn.command(b"NOOP")
        assert not conn.is_connected


async def test_421_is_returned_and_the_connection_closed() -> None:
    async with Scripted(_answering(b"421 4.3.2 shutting down\r\n")) as server:
        conn = await _connect(server)
        assert await conn.command(b"MAIL FROM:<>") == SmtpReply(421, "4.3.2 shutting down")
        assert not conn.is_connected


@pytest.mark.parametrize(("greeting", "error"), [(b"554 5.7.1 go away\r\n", BackendClosed), (b"", BackendTimeout)])
async def test_greeting_refused_or_missing(greeting: bytes, error: type[Exception]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await reader.read()

    async with Scripted(script) as server:
        with pytest.raises(error):
            await open_connection("127.0.0.1", server.port, 0.3, 2)


async def test_nothing_listening_is_an_os_error() -> None:
    sock = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = sock.sockets[0].getsockname()[1]
    sock.close()
    await sock.wait_closed()
    with pytest.raises(OSError):
        await open_connection("127.0.0.1", port, 1, 1)


@pytest.mark.parametrize("line", [b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>", b"RCPT TO:<a\x00@b>", b"X\rY", b"X\x7f"])
def test_a_control_character_is_never_sent(line: bytes) -> None:
    with pytest.raises(BackendProtocolError):
        command_line(line)


@pytest.fixture
async def quitting() -> AsyncIterator[Scripted]:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mta.test ESMTP\r\n")
        assert await reader.readline() == b"QUIT\r\n"
        writer.write(b"221 2.0.0 Bye\r\n")

    async with Scripted(script) as server:
        yield server


async def test_quit(quitting: Scripted) -> None:
    conn = await _connect(quitting)
    await conn.quit()
    assert not conn.is_connected
