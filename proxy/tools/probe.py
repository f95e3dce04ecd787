"""A tiny asyncio SMTP client for ``spamgate audit``: every reply kept, nothing hidden.

Library clients (smtplib, aiosmtplib) raise on error replies and negotiate on their
own; an audit wants to see exactly what the server said at each step and to decide
itself whether to go on.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from types import TracebackType

from spamgate.proxy.errors import ToolError

__all__ = ["Probe", "ProbeError", "SmtpReply"]

MAX_LINE = 8192
MAX_REPLY_LINES = 200


class ProbeError(ToolError):
    """The connection failed, timed out or the server spoke something other than SMTP."""


@dataclass(frozen=True)
class SmtpReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(self.lines)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class Probe:
    """One SMTP connection: ``async with Probe(host, port) as p: banner = p.banner``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 15.0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._implicit_tls = tls
        self._server_hostname = server_hostname or host
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.banner = SmtpReply(0, ())
        self.extensions: dict[str, str] = {}

    async def __aenter__(self) -> Probe:
        try:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._implicit_tls,
                    server_hostname=self._server_hostname if self._implicit_tls else None,
                    limit=MAX_LINE,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ProbeError(f"cannot connect to {self.host}:{self.port}: {exc or 'timeout'}") from None
        self.banner = await self.read_reply()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is None:
            return
        if et is None and not self._writer.is_closing():
            try:
                await self.command("QUIT")
            except ProbeError:
                pass
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass

    async def read_reply(self) -> SmtpReply:
        assert self._reader is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                while len(lines) < MAX_REPLY_LINES:
                    raw = await self._reader.readline()
                    if not raw:
                        raise ProbeError("server closed the connection")
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if len(line) < 3 or not line[:3].isdigit():
                        raise ProbeError(f"not an SMTP reply: {line[:80]!r}")
                    lines.append(line[4:])
                    if line[3:4] != "-":
                        return SmtpReply(int(line[:3]), tuple(lines))
        except TimeoutError:
            raise ProbeError(f"no reply within {self.timeout}s") from None
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise ProbeError(f"connection broken: {exc}") from None
        raise ProbeError("reply too long")

    async def command(self, line: str) -> SmtpReply:
        assert self._writer is not None
        try:
            self._writer.write(line.encode() + b"\r\n")
            await self._writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"connection broken: {exc}") from None
        return await self.read_reply()

    async def ehlo(self, name: str) -> SmtpReply:
        reply = await self.command(f"EHLO {name}")
        self.extensions = {}
        if reply.code == 250:
            for ext in reply.lines[1:]:
                keyword, _, params = ext.partition(" ")
                self.extensions[keyword.upper()] = params.upper()
        return reply

    @property
    def auth_mechanisms(self) -> set[str]:
        params = self.extensions.get("AUTH")
        return set(params.split()) if params is not None else set()

    async def starttls(self, context: ssl.SSLContext) -> SmtpReply:
        """Send STARTTLS; on 220, upgrade the connection (raises ProbeError if that fails)."""
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return reply
        assert self._writer is not None
        try:
            async with asyncio.timeout(self.timeout):
                await self._writer.start_tls(context, server_hostname=self._server_hostname)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ProbeError(f"TLS handshake failed: {exc or 'timeout'}") from None
        return reply

    @property
    def tls_info(self) -> str:
        assert self._writer is not None
        obj = self._writer.get_extra_info("ssl_object")
        if obj is None:
            return ""
        cipher = obj.cipher()
        return f"{obj.version()} {cipher[0] if cipher else ''}".strip()

    async def send_data(self, message: bytes) -> SmtpReply:
        """The DATA command and, after 354, the dot-stuffed message."""
        reply = await self.command("DATA")
        if reply.code != 354:
            return reply
        assert self._writer is not None
        body = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        stuffed = b"".join(b"." + ln if ln.startswith(b".") else ln for ln in body.splitlines(keepends=True))
        try:
            self._writer.write(stuffed + b".\r\n")
            await self._writer.drain()
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"connection broken: {exc}") from None
        return await self.read_reply()
