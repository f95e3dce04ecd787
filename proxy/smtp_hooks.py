"""aiosmtpd's handler hooks for GateSMTP: each command's decision, from the transaction controller.

aiosmtpd calls a handler's hooks as ``handle_<COMMAND>(server, session, envelope, ...)``; GateSMTP
is its own handler, so ``server`` lands in ``self`` and these are ordinary methods.
"""

from __future__ import annotations

from typing import Any

from spamgate.filters.sdk.api import Reply
from spamgate.proxy.backend import BackendReply
from spamgate.proxy.runtime import Runtime
from spamgate.proxy.transaction import TransactionController

__all__ = ["HooksMixin", "has_bad_chars"]


def has_bad_chars(value: str) -> bool:
    return any(ord(c) < 33 or ord(c) == 127 for c in value)


class HooksMixin:
    """Mixed into GateSMTP (before aiosmtpd's SMTP), whose attributes and methods it uses."""

    # Provided by aiosmtpd's SMTP and GateSMTP.
    runtime: Runtime
    ctl: TransactionController
    hostname: str
    _connected: Any
    _reset_timeout: Any

    async def handle_HELO(self, session: Any, envelope: Any, hostname: str) -> str | Reply:
        reply = await self._helo(session, hostname, esmtp=False)
        return reply if reply is not None else f"250 {self.hostname}"

    async def handle_EHLO(self, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str | Reply]:
        reply = await self._helo(session, hostname, esmtp=True)
        return [reply] if reply is not None else self._ehlo_lines(responses)

    async def _helo(self, session: Any, hostname: str, esmtp: bool) -> str | Reply | None:
        """None: go ahead (the greeting lines are the caller's)."""
        await self._connected()
        if has_bad_chars(hostname):
            return "501 5.5.4 Invalid HELO hostname"
        reply = await self.ctl.on_helo(hostname, esmtp=esmtp)
        if reply is not None:
            return reply
        session.host_name = hostname
        return None

    def _ehlo_lines(self, responses: list[str]) -> list[str | Reply]:
        keywords = [r[4:] for r in responses[1:] if r[4:] != "HELP"]
        if self.runtime.authenticator is None:
            keywords = [k for k in keywords if not k.startswith("AUTH")]
        keywords += ["PIPELINING", "ENHANCEDSTATUSCODES"]
        lines = [f"250-{self.hostname}", *(f"250-{k}" for k in keywords[:-1]), f"250 {keywords[-1]}"]
        # One write for the whole reply instead of aiosmtpd's write-and-drain per line.
        return ["\r\n".join(lines)]

    async def handle_MAIL(self, session: Any, envelope: Any, address: str,
                          options: list[str]) -> Reply | BackendReply:
        # aiosmtpd hands the null sender over as "<>" (and needs it truthy); everything else sees "".
        reply = await self.ctl.on_mail("" if address == "<>" else address, options)
        if (isinstance(reply, BackendReply) and reply.ok) or (isinstance(reply, Reply) and reply.code < 300):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return reply

    async def handle_RCPT(self, session: Any, envelope: Any, address: str,
                          options: list[str]) -> Reply | BackendReply:
        reply = await self.ctl.on_rcpt(address, options)
        if isinstance(reply, BackendReply) and reply.ok:
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, session: Any, envelope: Any) -> Reply | BackendReply:
        cfg = self.runtime.cfg
        # Filters and the backend get their own bounds; this one only keeps a dead client from lingering.
        self._reset_timeout(cfg.backend.timeout * 2 + max((t.timeout for t in cfg.filters.values()), default=0) + 30)
        content: bytes = envelope.original_content or b""
        return await self.ctl.on_data(content)

    async def handle_RSET(self, session: Any, envelope: Any) -> str:
        await self.ctl.abort_transaction()
        return "250 2.0.0 Ok"
