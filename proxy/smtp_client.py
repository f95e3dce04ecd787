"""The SMTP client the relay talks to the backend with: replies read in order, so commands can be pipelined.

Why not aiosmtplib here (the tools still use it): its protocol pairs each write with one
reply, documents that "if multiple commands are written to the transport without awaiting,
response data will be lost", and drops data that arrives while no command waits, so MAIL and
RCPT cannot share a round trip (RFC 2920) and BDAT (RFC 3030) is not there. A backend round
trip costs spamgate ~100 us of CPU on loopback (~40 of them aiosmtplib's own per command);
the relay makes three or four per message. This client is an ``asyncio.Protocol`` that
parses replies as they arrive into a queue, in order, and hands them out one by one.

What it does not do: TLS (the backend is a local MTA, reached in plain text), AUTH, any
command that is not a plain line. A reply nobody asked for (data while no command is
outstanding) breaks the connection: it would otherwise answer the next command.
"""

from __future__ import annotations

import asyncio
import collections
import re
from dataclasses import dataclass

__all__ = ["BackendClosed", "BackendProtocolError", "BackendTimeout", "ClientError", "Connection", "SmtpReply",
           "command_line", "open_connection"]

MAX_LINE = 8192  # as aiosmtplib: a reply line longer than this is garbage, not SMTP
MAX_REPLY = 4 * MAX_LINE


class ClientError(Exception):
    """Anything that makes the connection unusable: the caller closes it and never pools it."""


class BackendClosed(ClientError, ConnectionError):
    """The backend closed the connection, or it was never open."""


class BackendTimeout(ClientError, TimeoutError):
    """No reply in time: a reply given up on could answer the next command, so the connection is closed."""


class BackendProtocolError(ClientError):
    """A reply that is not SMTP, too long, or not asked for."""


@dataclass(frozen=True, slots=True)
class SmtpReply:
    code: int
    message: str  # the lines' texts without their codes, joined by "\n" (as aiosmtplib's SMTPResponse)


class _ReplyQueue(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._lines: list[str] = []  # the texts of a multi-line reply so far
        self._replies: collections.deque[SmtpReply] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.error: ClientError | None = None
        self.owed = 1  # replies the backend owes us: the greeting first
        # The reply timeout: one timer per connection that only moves its deadline (see _arm).
        self._deadline = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) != -1:
            line = bytes(buf[start:end + 1])
            start = end + 1
            if not self._line(line):
                return
        del buf[:start]
        if len(buf) > MAX_LINE:
            self._fail(BackendProtocolError("reply line too long"))

    def _line(self, line: bytes) -> bool:
        code = line[:3]
        if len(line) > MAX_LINE or not code.isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
            self._fail(BackendProtocolError(f"malformed reply line: {line[:80]!r}"))
            return False
        self._lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
        if line[3:4] == b"-":
            if sum(map(len, self._lines)) > MAX_REPLY:
                self._fail(BackendProtocolError("reply too long"))
                return False
            return True
        if self.owed <= 0:
            self._fail(BackendProtocolError(f"reply nobody asked for: {line[:80]!r}"))
            return False
        self.owed -= 1
        self._replies.append(SmtpReply(int(code), "\n".join(self._lines)))
        self._lines = []
        self._wake()
        return True

    def eof_received(self) -> bool:
        self._fail(BackendClosed("the backend closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = BackendClosed(f"connection lost: {exc}" if exc else "connection closed")
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _fail(self, error: ClientError) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def settled(self) -> bool:
        return self.owed == 0 and not self._replies and not self._lines and not self._buffer

    def _arm(self, timeout: float) -> None:
        """A reply is due within ``timeout`` seconds from now.

        A pooled connection waits for two or three replies per message: asyncio.timeout() would
        schedule and cancel a timer for each. Here the armed timer stays; when it fires before the
        deadline (replies came meanwhile) it re-arms for the rest, and when nobody waits it lapses.
        """
        self._timeout = timeout
        self._deadline = deadline = self._loop.time() + timeout
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._timer = self._loop.call_at(deadline, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._deadline_reached)
            return
        self._fail(BackendTimeout(f"no reply from the backend in {self._timeout:g}s"))

    async def next_reply(self, within: float | None = None) -> SmtpReply:
        """The next reply; a BackendTimeout (and the connection closed) when it takes more than ``within`` seconds."""
        while not self._replies:
            if self.error is not None:
                raise self.error
            if within is not None:
                self._arm(within)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._replies.popleft()


_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def command_line(line: bytes) -> bytes:
    """``line`` with its CRLF; a control character in it (a CR or LF would inject a command) is refused."""
    if _CONTROL.search(line):
        raise BackendProtocolError(f"refusing to send a control character: {line[:80]!r}")
    return line + b"\r\n"


class Connection:
    """One backend connection after its greeting: send lines, read the replies they are owed, in order."""

    def __init__(self, protocol: _ReplyQueue, timeout: float) -> None:
        self._protocol = protocol
        self.timeout = timeout
        self.extensions: dict[str, str] = {}  # from the last EHLO: lower-case keyword -> parameters

    @property
    def is_connected(self) -> bool:
        t = self._protocol.transport
        return t is not None and not t.is_closing() and self._protocol.error is None

    @property
    def idle(self) -> bool:
        """Connected, owing no reply and holding none: safe to hand to the next transaction."""
        return self.is_connected and self._protocol.settled()

    def supports(self, extension: str) -> bool:
        return extension in self.extensions

    def send(self, data: bytes, replies: int = 1) -> None:
        """Write ``data`` (whole command lines, or a BDAT chunk) that ``replies`` replies will answer."""
        p = self._protocol
        if p.error is not None:
            raise p.error
        if p.transport is None or p.transport.is_closing():
            raise BackendClosed("connection closed")
        p.owed += replies
        p.transport.write(data)

    async def reply(self) -> SmtpReply:
        """The next reply owed; closes the connection when it cannot come (timeout, or a broken connection)."""
        try:
            reply = await self._protocol.next_reply(self.timeout)
        except ClientError:
            self.close()
            raise
        if reply.code == 421:  # the backend is closing down the connection (RFC 5321 3.8)
            self.close()
        return reply

    async def command(self, line: bytes) -> SmtpReply:
        """One command line (without its CRLF) and its reply."""
        self.send(command_line(line))
        return await self.reply()

    async def ehlo(self, name: str) -> SmtpReply:
        """EHLO, and the extensions its 250 lists (none after a refusal)."""
        reply = await self.command(b"EHLO " + name.encode("ascii"))
        self.extensions = {}
        if reply.code == 250:
            for line in reply.message.split("\n")[1:]:
                keyword, _, params = line.partition(" ")
                if keyword:
                    self.extensions[keyword.lower()] = params.strip()
        return reply

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    async def quit(self) -> None:
        try:
            await self.command(b"QUIT")
        finally:
            self.close()


async def open_connection(host: str, port: int, connect_timeout: float, reply_timeout: float) -> Connection:
    """Connect and read the greeting within ``connect_timeout``; later replies get ``reply_timeout`` each."""
    loop = asyncio.get_running_loop()
    protocol = _ReplyQueue(loop)
    try:
        async with asyncio.timeout(connect_timeout):
            await loop.create_connection(lambda: protocol, host, port)
            greeting = await protocol.next_reply()
    except TimeoutError:
        if protocol.transport is not None:
            protocol.transport.close()
        raise BackendTimeout(f"no greeting from {host}:{port} in {connect_timeout:g}s") from None
    except ClientError:
        if protocol.transport is not None:
            protocol.transport.close()
        raise
    conn = Connection(protocol, reply_timeout)
    if greeting.code != 220:
        conn.close()
        raise BackendClosed(f"the backend refused the connection: {greeting.code} {greeting.message}")
    return conn
