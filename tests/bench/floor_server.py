"""Three servers that answer 250 to every message and relay nothing: the floors under any proxy.

- ``aiosmtpd``: aiosmtpd as shipped, with a handler whose handle_DATA answers 250. What the
  server library spamgate is built on costs to receive a message, before any relaying, filtering,
  logging or metrics.
- ``protocol``: a bare ``asyncio.Protocol`` that speaks just enough SMTP for smtp-source and the
  benchmark's clients (no parsing beyond the verb, no limits, no TLS). What asyncio and the kernel
  cost for the same conversation; no server to run in production.
- ``streams``: the same conversation in aiosmtpd's shape: asyncio streams, a task per connection,
  ``readuntil`` per command line and a ``drain`` per reply. What that shape costs without
  aiosmtpd's work per command.

usage: floor_server.py PORT aiosmtpd|protocol|streams
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiosmtpd.smtp import SMTP


class AnswerHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: dropped"


class AnswerProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""
        self.in_data = False
        transport.write(b"220 floor.bench.test ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.in_data:
                end = self.buf.find(b"\r\n.\r\n")
                if end < 0:
                    return
                self.buf, self.in_data = self.buf[end + 5 :], False
                self.transport.write(b"250 2.0.0 Ok: dropped\r\n")
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                return
            verb, self.buf = self.buf[:4].upper(), self.buf[end + 2 :]
            if verb == b"EHLO":
                self.transport.write(b"250-floor.bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                self.in_data = True
                self.transport.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 2.0.0 Bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 2.0.0 Ok\r\n")


async def answer_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 floor.bench.test ESMTP\r\n")
    await writer.drain()
    while True:
        verb = (await reader.readuntil(b"\n"))[:4].upper()
        if verb == b"EHLO":
            writer.write(b"250-floor.bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        elif verb == b"DATA":
            writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            await writer.drain()
            await reader.readuntil(b"\r\n.\r\n")
            writer.write(b"250 2.0.0 Ok: dropped\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 2.0.0 Bye\r\n")
            writer.close()
            return
        else:
            writer.write(b"250 2.0.0 Ok\r\n")
        await writer.drain()


async def main(port: int, kind: str) -> None:
    loop = asyncio.get_running_loop()
    if kind == "streams":
        server = await asyncio.start_server(answer_stream, "127.0.0.1", port, backlog=1024, limit=1 << 22)
        async with server:
            await server.serve_forever()
        return
    if kind == "protocol":
        factory: Any = AnswerProtocol
    else:  # an explicit hostname: aiosmtpd would otherwise call socket.getfqdn() (a DNS lookup)
        factory = lambda: SMTP(AnswerHandler(), hostname="floor.bench.test", decode_data=False,  # noqa: E731
                               data_size_limit=26214400)  # fmt: skip
    server = await loop.create_server(factory, host="127.0.0.1", port=port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
