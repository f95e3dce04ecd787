"""What GateSMTP writes back to the client: its replies, with enhanced status codes added to
aiosmtpd's own, counted per phase, and held while a pipelined group is still being answered."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from spamgate.filters.sdk.api import Phase, Reply
from spamgate.proxy import metrics, replies
from spamgate.proxy.backend import BackendReply
from spamgate.proxy.replies import enhance, format_multiline
from spamgate.proxy.runtime import Runtime
from spamgate.proxy.session import SessionState
from spamgate.proxy.tasks import spawn

__all__ = ["RepliesMixin"]

log = logging.getLogger("spamgate.smtp")

_PROTOCOL_ERRORS = {"500", "501", "503"}
# Commands whose replies may wait for the next pipelined command's (RFC 2920's envelope commands).
_HELD_PHASES = frozenset({"mail", "rcpt"})
# The commands whose 5xx replies are refusals a RefusalObserver hears of (not AUTH's, not QUIT's).
_OBSERVED_PHASES = {"connect": Phase.CONNECT, "helo": Phase.HELO, "ehlo": Phase.HELO, "mail": Phase.MAIL,
                    "rcpt": Phase.RCPT, "data": Phase.DATA}


def _line_waiting(reader: asyncio.StreamReader) -> bool:
    """A whole line is buffered already: the session loop will read it without waiting for the client.
    (StreamReader keeps its buffer private; without one, nothing is ever held.)"""
    return b"\n" in getattr(reader, "_buffer", b"")


class RepliesMixin:
    """Mixed into GateSMTP (before aiosmtpd's SMTP), whose attributes it uses."""

    # Provided by aiosmtpd's SMTP and GateSMTP.
    runtime: Runtime
    transport: asyncio.BaseTransport | None
    enable_SMTPUTF8: bool
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    _phase: str
    _errors: int
    _held: bytes

    async def push(self, status: Any) -> None:
        if isinstance(status, BackendReply):
            # The backend's own words, passed through as they are (multi-line kept).
            status = "\r\n".join(format_multiline(status.code, status.message))
        else:
            if isinstance(status, Reply):
                status = str(status)
            if isinstance(status, str):
                # RFC 2034: no enhanced codes on EHLO/HELO success lines (clients parse the keywords).
                if not (self._phase in ("ehlo", "helo") and status.startswith("250")):
                    status = enhance(status)
        if isinstance(status, str):
            code = status[:3]
            if code.isdigit():
                metrics.REPLIES_BY(self._phase, f"{code[0]}xx").inc()
            if code in _PROTOCOL_ERRORS:
                self._errors += 1
                if status.startswith('500 5.5.2 Error: command "'):
                    log.info("unknown-command=%r", status[26:].split('"', 1)[0][:32])
            elif code[0] == "5" and self.runtime.pipeline.observers:
                self._tell_refused(int(code))
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        data = status + b"\r\n"
        if self._phase in _HELD_PHASES and data[:1] != b"3" and _line_waiting(self._reader):
            # The client pipelined (RFC 2920): its next command is here already and will be answered
            # next, so this reply goes out with that one, in one write, as Postfix's smtpd does. Never
            # an intermediate (3xx) reply: the client waits for it before sending more.
            self._held += data
        else:
            await self._write(data)
        if self._errors >= self.runtime.cfg.limits.max_errors and self.transport is not None:
            self._errors = -(10**9)
            metrics.LIMITS.labels("max_errors").inc()
            await self._write(str(replies.TOO_MANY_ERRORS).encode() + b"\r\n")
            self.transport.close()

    def _tell_refused(self, code: int) -> None:
        """A permanent refusal, for the filters that count them (RefusalObserver: the penalty box)."""
        phase = _OBSERVED_PHASES.get(self._phase)
        state: SessionState | None = getattr(self, "state", None)
        if phase is not None and state is not None:
            spawn(self.runtime.pipeline.tell_refused(phase, code, state.info()))

    async def _write(self, data: bytes) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        self._writer.write(data)
        await self._writer.drain()

    def take_held(self) -> bytes:
        """Replies held for a pipelined group, for a caller that writes to the transport itself (shutdown)."""
        held, self._held = self._held, b""
        return held
