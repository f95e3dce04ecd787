"""The record of one client session: who the client is, and the transaction it has open.

Pure data plus the views filters and the relay need (``info``, ``context``,
``client_facts``). What happens at each SMTP command is decided by the transaction
controller (``proxy.transaction``), which reads and writes this record.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from spamgate.filters.sdk.api import Context, Envelope, Message, Phase, Reply, SessionInfo
from spamgate.filters.sdk.runner import PhaseResult, Scoreboard
from spamgate.proxy.backend import ClientFacts, Transaction
from spamgate.proxy.rdns import ClientNames
from spamgate.proxy.runtime import Runtime

__all__ = ["SessionState", "TransactionState", "has_control_chars"]


_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")


def has_control_chars(value: str) -> bool:
    return _CONTROL_CHARS.search(value) is not None


@dataclass
class TransactionState:
    """One MAIL..DATA transaction: its envelope, its scoreboard and its backend transaction."""

    board: Scoreboard
    started: float = field(default_factory=time.monotonic)
    mail_from: str = ""
    mail_options: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    rejected_rcpts: int = 0
    backend: Transaction | None = None
    broken: Reply | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionState:
    """Facts about the client that outlive a single transaction (and STARTTLS)."""

    id: str
    runtime: Runtime
    listener: str
    role: str
    peer_ip: str
    peer_port: int
    helo: str | None = None
    names: ClientNames = field(default_factory=ClientNames)
    esmtp: bool = True
    tls: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    login: str | None = None
    board: Scoreboard = field(default_factory=Scoreboard)
    held: PhaseResult | None = None  # a connect/HELO reject waiting to be applied
    txn: TransactionState | None = None
    transactions: int = 0
    # The last SessionInfo and the facts it was built from: filters ask at every phase, and the
    # facts change only at HELO, STARTTLS, AUTH and the reverse lookup.
    _info: tuple[tuple[object, ...], SessionInfo] | None = field(default=None, repr=False, compare=False)

    def info(self) -> SessionInfo:
        facts = (self.helo, self.names, self.tls, self.tls_version, self.tls_cipher, self.login)
        if self._info is not None and self._info[0] == facts:
            return self._info[1]
        info = self._build_info()
        self._info = (facts, info)
        return info

    def _build_info(self) -> SessionInfo:
        return SessionInfo(
            session_id=self.id,
            peer_ip=self.peer_ip,
            peer_port=self.peer_port,
            reverse_name=self.names.reverse,
            client_name=self.names.verified,
            helo=self.helo,
            tls=self.tls is not None,
            tls_version=self.tls_version,
            tls_cipher=self.tls_cipher,
            authenticated_user=self.login,
            listener_role=self.role,
            listener_name=self.listener,
        )

    def context(
        self, phase: Phase, rcpt: str | None = None, message: Message | None = None, received: bytes = b""
    ) -> Context:
        t = self.txn
        env = Envelope()
        notes: dict[str, Any] = {}
        if t is not None:
            env = Envelope(
                mail_from=t.mail_from,
                mail_options=tuple(t.mail_options),
                recipients=tuple(t.recipients),
                rcpt=rcpt,
                smtputf8="SMTPUTF8" in t.mail_options,
            )
            notes = t.notes
        return Context(phase, self.info(), env, message, None, notes, received)

    @property
    def protocol(self) -> str:
        base = "ESMTP" if self.esmtp else "SMTP"
        return base + ("S" if self.tls else "") + ("A" if self.login else "")

    def client_facts(self) -> ClientFacts:
        return ClientFacts(
            addr=self.peer_ip, port=self.peer_port, name=self.names.verified, helo=self.helo,
            proto="ESMTP" if self.esmtp else "SMTP", login=self.login, reverse_name=self.names.reverse,
            name_tempfail=self.names.temporary_failure,
        )
