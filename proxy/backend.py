"""The backend contract: what a client transaction needs from wherever mail goes next.

``proxy.relay.SmtpBackend`` (the MTA over SMTP) and ``proxy.maildir.MaildirBackend`` (the
embedded default) implement it; the session and the transaction controller see only this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["BackendProtocol", "BackendReply", "ClientFacts", "Transaction"]


@dataclass(frozen=True)
class ClientFacts:
    """Who the real client is, for XCLIENT/XFORWARD."""

    addr: str
    port: int = 0
    name: str | None = None  # forward-confirmed reverse name
    helo: str | None = None
    proto: str = "ESMTP"
    login: str | None = None
    reverse_name: str | None = None  # the PTR name, confirmed or not
    name_tempfail: bool = False  # the reverse lookup failed temporarily

    @property
    def xclient_name(self) -> str:
        if self.name:
            return self.name
        return "[TEMPUNAVAIL]" if self.name_tempfail else "[UNAVAILABLE]"


@dataclass(frozen=True)
class BackendReply:
    code: int
    message: str

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


class Transaction(Protocol):
    async def mail(self, sender: str, options: list[str]) -> BackendReply: ...
    async def rcpt(self, rcpt: str, options: list[str]) -> BackendReply: ...
    async def data(self, message: bytes) -> BackendReply: ...
    async def finish(self, reset: bool) -> None: ...


class BackendProtocol(Protocol):
    async def begin(self, client: ClientFacts) -> Transaction: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
