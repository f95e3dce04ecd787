"""A tiny scripted clamd for protocol edge cases (unit tests only; the real one is in tests/integration)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

Behaviour = Callable[[bytes], bytes | None]  # stream received -> raw answer (None: hang)


@dataclass
class FakeClamd:
    answer: Behaviour = lambda data: b"stream: OK\0"
    max_stream: int | None = None  # like StreamMaxLength: answer and close once passed
    streams: list[bytes] = field(default_factory=list)
    active: int = 0
    peak: int = 0
    server: asyncio.AbstractServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, path: str | None = None) -> FakeClamd:
        if path:
            self.server = await asyncio.start_unix_server(self._handle, path)
        else:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            cmd = await reader.readuntil(b"\0")
            if cmd == b"zPING\0":
                writer.write(b"PONG\0")
                return
            assert cmd == b"zINSTREAM\0", cmd
            data = b""
            while True:
                (n,) = struct.unpack("!L", await reader.readexactly(4))
                if n == 0:
                    break
                data += await reader.readexactly(n)
                if self.max_stream is not None and len(data) > self.max_stream:
                    writer.write(b"INSTREAM size limit exceeded. ERROR\0")
                    return
            self.streams.append(data)
            out = self.answer(data)
            if out is None:
                await asyncio.sleep(3600)
            else:
                writer.write(out)
        finally:
            self.active -= 1
            await writer.drain()
            writer.close()
