"""A small asyncio client for clamd's INSTREAM and PING commands (TCP or unix socket).

Why our own rather than aioclamd (1.1.0, PyPI): aioclamd speaks TCP only (no unix
socket, the usual way clamd runs next to a mail server), reads the buffer 1 KiB at a
time through ``asyncio.to_thread`` (a thread hop per KiB: ~10,000 for a 10 MB
message) and has no bound on concurrent connections. The protocol is small enough to
own: ``zINSTREAM\\0``, chunks as ``<u32 length><bytes>``, a zero-length chunk, then
one NUL-terminated answer line.

Answers become values (:class:`ScanResult`: clean, virus with its signature, or
``size`` when clamd's ``StreamMaxLength`` refused the stream); only "clamd could not be
asked" raises :class:`ClamdError`, whose ``kind`` is a closed set (a metric label).
"""

from __future__ import annotations

import asyncio
import re
import struct
from dataclasses import dataclass
from typing import Literal

from spamgate.filters.sdk.errors import DependencyError

__all__ = ["ClamdClient", "ClamdError", "ClamdSettings", "ScanResult", "parse_answer"]

ErrorKind = Literal["connect", "timeout", "protocol", "clamd"]
Status = Literal["clean", "virus", "size"]

CHUNK = 64 * 1024  # well under any StreamMaxLength; fewer, larger writes than aioclamd's 1 KiB
_ANSWER_LIMIT = 4096  # clamd's answers are one short line
_FOUND = re.compile(r"^(?:stream|[^:]*): (?P<sig>.+) FOUND$")
_SIZE_LIMIT = "INSTREAM size limit exceeded"


@dataclass(frozen=True)
class ClamdSettings:
    """Where clamd listens (``socket`` wins over host/port) and how long to wait for it."""

    host: str = "127.0.0.1"
    port: int = 3310
    socket: str | None = None
    scan_timeout: float = 8.0
    connect_timeout: float = 2.0
    max_connections: int = 4

    @property
    def address(self) -> str:
        return f"unix:{self.socket}" if self.socket else f"{self.host}:{self.port}"


class ClamdError(DependencyError):
    """clamd could not be reached or gave no usable answer."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"clamd {kind}: {message}")
        self.kind: ErrorKind = kind


@dataclass(frozen=True)
class ScanResult:
    status: Status
    signature: str = ""


def parse_answer(answer: str) -> ScanResult:
    """``stream: OK`` / ``stream: <signature> FOUND`` / ``INSTREAM size limit exceeded. ERROR``."""
    text = answer.strip()
    if text.startswith(_SIZE_LIMIT):
        return ScanResult("size")
    if text.endswith(": OK"):
        return ScanResult("clean")
    m = _FOUND.match(text)
    if m:
        return ScanResult("virus", m.group("sig").strip())
    if text.endswith("ERROR"):
        raise ClamdError("clamd", text[:200])
    raise ClamdError("protocol", f"unexpected answer {text[:200]!r}")


class ClamdClient:
    """One per filter: a connection per request (clamd's default), at most ``max_connections`` at once."""

    def __init__(self, settings: ClamdSettings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.max_connections)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        s = self.settings
        try:
            async with asyncio.timeout(s.connect_timeout):
                if s.socket:
                    return await asyncio.open_unix_connection(s.socket, limit=_ANSWER_LIMIT)
                return await asyncio.open_connection(s.host, s.port, limit=_ANSWER_LIMIT)
        except TimeoutError:
            raise ClamdError("connect", f"{s.address}: no connection within {s.connect_timeout}s") from None
        except OSError as exc:
            raise ClamdError("connect", f"{s.address}: {exc.strerror or exc}") from None

    @staticmethod
    async def _answer(reader: asyncio.StreamReader) -> str:
        try:
            line = await reader.readuntil(b"\0")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial  # clamd closed without the NUL: take what it said, if anything
        except asyncio.LimitOverrunError:
            raise ClamdError("protocol", "answer longer than expected") from None
        text = line.rstrip(b"\0").decode("utf-8", "replace")
        if not text.strip():
            raise ClamdError("protocol", "connection closed without an answer")
        return text

    async def _exchange(self, data: bytes | None) -> str:
        """Send one command (INSTREAM with ``data``, else PING) and return clamd's answer."""
        s = self.settings
        async with self._slots:
            try:
                async with asyncio.timeout(s.scan_timeout):
                    reader, writer = await self._connect()
                    try:
                        try:
                            await self._send(writer, data)
                        except (ConnectionError, BrokenPipeError):
                            # clamd closes mid-stream past StreamMaxLength; its answer says why.
                            pass
                        return await self._answer(reader)
                    finally:
                        writer.close()
            except TimeoutError:
                raise ClamdError("timeout", f"no answer from {s.address} within {s.scan_timeout}s") from None
            except (ConnectionError, OSError) as exc:
                raise ClamdError("connect", f"{s.address}: {exc}") from None

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes | None) -> None:
        if data is None:
            writer.write(b"zPING\0")
        else:
            writer.write(b"zINSTREAM\0")
            view = memoryview(data)
            for off in range(0, len(view), CHUNK):
                part = view[off : off + CHUNK]
                writer.write(struct.pack("!L", len(part)))
                writer.write(part)
                await writer.drain()
            writer.write(struct.pack("!L", 0))
        await writer.drain()

    async def scan(self, data: bytes) -> ScanResult:
        return parse_answer(await self._exchange(data))

    async def ping(self) -> None:
        answer = await self._exchange(None)
        if answer.strip() != "PONG":
            raise ClamdError("protocol", f"PING answered {answer[:100]!r}")
