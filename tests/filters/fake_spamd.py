"""A scripted SPAMD server on a loopback port, for unit tests of the client side.

It speaks just enough of the protocol to record what a client sent (verb, headers,
body) and answer with a canned reply; it can also hold answers back (to observe
concurrency) or never answer (to exercise timeouts). Real-spamd behaviour is covered
by the integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class SpamdRequest:
    verb: str
    headers: dict[str, str]
    body: bytes


def spamd_reply(
    body: bytes = b"", *, spam: str | None = "False ; 0.0 / 5.0", status: str = "0 EX_OK", extra: str = ""
) -> bytes:
    head = f"SPAMD/1.1 {status}\r\n"
    if spam is not None:
        head += f"Spam: {spam}\r\n"
    if body:
        head += f"Content-length: {len(body)}\r\n"
    head += extra
    return head.encode() + b"\r\n" + body


@dataclass
class FakeSpamd:
    reply: bytes = field(default_factory=spamd_reply)
    hold: asyncio.Event | None = None  # answer only once set
    silent: bool = False  # never answer
    requests: list[SpamdRequest] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    port: int = 0
    _server: asyncio.Server | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeSpamd:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        async with self.arrived:
            await self.arrived.wait_for(lambda: self.active == 0)

    async def wait_for_active(self, n: int) -> None:
        async with self.arrived:
            await self.arrived.wait_for(lambda: self.active >= n)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            data = await reader.read()
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            self.requests.append(SpamdRequest(lines[0].split(" ")[0], headers, body))
            async with self.arrived:
                self.arrived.notify_all()
            if self.silent:
                await self._closing.wait()
                return
            if self.hold is not None:
                await self.hold.wait()
            writer.write(self.reply)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            self.active -= 1
            writer.close()
            async with self.arrived:
                self.arrived.notify_all()
