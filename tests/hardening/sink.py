"""A counting SMTP sink with fault injection, for exactly-once accounting.

Like a real MTA it commits a message (counts its Message-ID) before answering 250 to the
final dot. Faults: a delay before chosen replies, and ``421`` + close on chosen
transactions (at MAIL, RCPT or after DATA, in which case the message is not committed).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable

from tests.hardening.support import ids_in

Fault = Callable[[int, str], str | None]  # (transaction number, stage) -> "421" / "delay:SECONDS" / None


class CountingSink:
    def __init__(self, fault: Fault | None = None, keep_raw: bool = False) -> None:
        self.fault = fault
        self.keep_raw = keep_raw
        self.raw: dict[str, bytes] = {}
        self.delivered: Counter[str] = Counter()
        self.transactions = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self.port = 0
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(10):
            raise TimeoutError("sink did not start")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            pass

    def close(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self.delivered)

    async def _fault(self, number: int, stage: str, writer: asyncio.StreamWriter) -> bool:
        """Apply the fault for this stage; True when the session was ended with 421."""
        what = self.fault(number, stage) if self.fault else None
        if what is None:
            return False
        if what.startswith("delay:"):
            await asyncio.sleep(float(what[6:]))
            return False
        writer.write(b"421 4.3.0 sink going away\r\n")
        await writer.drain()
        writer.close()
        return True

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        number = 0
        try:
            writer.write(b"220 sink.test ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    with self._lock:
                        self.transactions += 1
                        number = self.transactions
                    if await self._fault(number, "mail", writer):
                        return
                    writer.write(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    if await self._fault(number, "rcpt", writer):
                        return
                    writer.write(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    data = bytearray()
                    while (chunk := await reader.readline()) != b".\r\n":
                        if not chunk:
                            return
                        data += chunk[1:] if chunk.startswith(b".") else chunk
                    if await self._fault(number, "data", writer):
                        return
                    with self._lock:
                        ids = ids_in([bytes(data)])
                        self.delivered.update(ids)
                        if self.keep_raw:
                            self.raw.update((mid, bytes(data)) for mid in ids)
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                else:  # RSET, NOOP, HELO
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()
