"""The records a filter sees: the :class:`Context` of one ``check`` and its :class:`FilterEnv`.

A ``Context`` bundles the :class:`SessionInfo` (the client connection), the
:class:`Envelope`, the :class:`Message` at end of DATA and the :class:`AuthAttempt` at AUTH;
``FilterEnv`` is what a filter gets once, at construction: site facts and shared services.
Re-exported by :mod:`spamgate.filters.sdk.api`, where plugin authors import them from.
"""

from __future__ import annotations

import ipaddress
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from functools import cached_property
from typing import Any

from spamgate.filters.sdk.dns import DnsSettings, Resolver
from spamgate.filters.sdk.metrics import MemoryMetrics, Metrics
from spamgate.filters.sdk.state import StateStore
from spamgate.filters.sdk.verdict import Phase

__all__ = [
    "QUARANTINE_NOTE", "AuthAttempt", "Context", "Envelope", "FilterEnv", "Message", "SessionInfo", "domain_of",
]


@dataclass(frozen=True)
class SessionInfo:
    """What is known about the client connection."""

    session_id: str
    peer_ip: str
    peer_port: int = 0
    reverse_name: str | None = None  # the client's PTR name, confirmed or not
    client_name: str | None = None  # the PTR name when it resolves back to peer_ip (FCrDNS)
    helo: str | None = None
    tls: bool = False
    tls_version: str | None = None
    tls_cipher: str | None = None
    authenticated_user: str | None = None
    listener_role: str = "mx"
    listener_name: str = ""

    @cached_property
    def peer_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.peer_ip)
        except ValueError:
            return None


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope as accepted so far."""

    mail_from: str | None = None
    mail_options: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    rcpt: str | None = None
    smtputf8: bool = False

    @property
    def mail_from_domain(self) -> str | None:
        return domain_of(self.mail_from)


def domain_of(address: str | None) -> str | None:
    """The lower-cased domain of an address, or None for ``<>`` and bare local parts."""
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip().strip(">").lower() or None


class Message:
    """The message at end of DATA: canonical CRLF bytes, headers parsed on first use."""

    __slots__ = ("__dict__", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @cached_property
    def header_end(self) -> int:
        """Offset of the first body byte (after the blank line), or len(raw)."""
        if self.raw.startswith(b"\r\n"):
            return 2
        pos = self.raw.find(b"\r\n\r\n")
        return len(self.raw) if pos < 0 else pos + 4

    @cached_property
    def header_bytes(self) -> bytes:
        return self.raw[: self.header_end]

    @cached_property
    def body(self) -> bytes:
        return self.raw[self.header_end :]

    @cached_property
    def headers(self) -> EmailMessage:
        """Headers only, parsed leniently (compat32 keeps the raw values)."""
        return BytesHeaderParser(policy=compat32).parsebytes(self.header_bytes)

    def get_all(self, name: str) -> list[str]:
        return [str(v) for v in (self.headers.get_all(name) or [])]


@dataclass(frozen=True)
class AuthAttempt:
    """Facts about a login attempt, for filters of the ``auth`` phase."""

    mechanism: str
    username: str
    success: bool


@dataclass(frozen=True)
class Context:
    """A read-only view of the transaction for one ``check`` call.

    ``notes`` is the one mutable part: a per-transaction dict filters use to share
    facts (keys are best prefixed with the filter name).
    """

    phase: Phase
    session: SessionInfo
    envelope: Envelope = field(default_factory=Envelope)
    message: Message | None = None
    auth: AuthAttempt | None = None
    notes: MutableMapping[str, Any] = field(default_factory=dict)
    received: bytes = b""
    """At DATA: the ``Received:`` trace header (CRLF-terminated bytes) the engine prepends when
    it relays this message, e.g. for a content scanner that should see our hop; else empty."""


@dataclass(frozen=True)
class FilterEnv:
    """What the engine hands a filter at construction: site facts and shared services.

    ``metrics`` records the filter's own metrics (Prometheus in the engine, a
    :class:`MemoryMetrics` by default, so tests can read values back); ``resolver`` is the
    process-wide caching resolver for ``dns`` (None outside the engine: a test passes a
    fake); ``state`` is the shared :class:`StateStore` (None when the engine has none).
    """

    hostname: str = "localhost"
    local_domains: tuple[str, ...] = ()
    dns: DnsSettings = field(default_factory=DnsSettings)
    state_dir: str = "/var/lib/spamgate"
    sender_login_map: str | None = None  # [auth] sender_login_map: which logins own which senders
    metrics: Metrics = field(default_factory=MemoryMetrics, compare=False)
    resolver: Resolver | None = field(default=None, compare=False)
    # The server's StateStore (the same one for the life of the process, across reloads): counters
    # and flags that expire, shared by several instances with a shared backend. Its errors reach
    # the filter as StateError (after the engine counted and logged them), for its on_state_error.
    # Not part of equality or the hash: two envs with the same settings are the same env.
    state: StateStore | None = field(default=None, compare=False)

    def is_local_domain(self, domain: str | None) -> bool:
        if not domain:
            return False
        d = domain.lower().rstrip(".")
        return any(d == ld or d.endswith("." + ld) for ld in self.local_domains)


QUARANTINE_NOTE = "spamgate.quarantine"
"""``ctx.notes[QUARANTINE_NOTE] = (filter_name, Reply)`` at DATA asks the engine to hold the
message in quarantine instead of relaying it; without a ``[pipeline] quarantine_dir`` the
engine answers the Reply instead. Ignored for a filter in observe mode."""
