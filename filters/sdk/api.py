"""The filter contract: everything a spamgate filter sees and returns.

A filter is a small class registered in the entry-point group ``spamgate.filters``.
The engine builds it once at start-up (and again on reload) with
``factory(name, options, env)`` and then calls ``check(phase, ctx)`` for every phase
it declared, concurrently with the other filters of that phase, under the timeout
and error policy of its ``[filters.<name>]`` table.

Rules of the road:

* A filter returns a :class:`Verdict`; it never writes to a socket, never changes
  the envelope and never formats a status line itself (it returns a :class:`Reply`).
* Options are validated once, in the constructor; a bad option raises
  :class:`OptionError` naming the key.
* ``check`` must not block the event loop: run blocking library calls with
  ``asyncio.to_thread``.

Example::

    class NoFoo:
        name = "nofoo"
        phases = frozenset({Phase.DATA})
        symbols = frozenset({"FOO_FOUND"})

        def __init__(self, name: str, options: Mapping[str, object], env: FilterEnv):
            self.name = name
            self.score = float(options.get("score", 5.0))  # type: ignore[arg-type]

        async def check(self, phase: Phase, ctx: Context) -> Verdict:
            assert ctx.message is not None
            if b"foo" in ctx.message.raw:
                return Verdict.cont(Symbol("FOO_FOUND", self.score, "body says foo"))
            return Verdict.cont()

        async def close(self) -> None:
            pass
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from functools import cached_property
from typing import Any, Literal, Protocol, runtime_checkable

from spamgate.filters.sdk.dns import DnsSettings, Resolver
from spamgate.filters.sdk.errors import OptionError
from spamgate.filters.sdk.metrics import MemoryMetrics, Metrics
from spamgate.filters.sdk.state import StateStore

__all__ = [
    "Context",
    "Decision",
    "DnsSettings",
    "Envelope",
    "Filter",
    "FilterEnv",
    "FilterFactory",
    "HeaderRemoval",
    "LearnKind",
    "LearnResult",
    "Learner",
    "Message",
    "OptionError",
    "Phase",
    "QUARANTINE_NOTE",
    "ReadyCheck",
    "RefusalObserver",
    "Reply",
    "SessionInfo",
    "Symbol",
    "Verdict",
]


class Phase(str, enum.Enum):
    """The SMTP phases at which filters are consulted, in protocol order."""

    CONNECT = "connect"
    HELO = "helo"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


class Decision(str, enum.Enum):
    """What a verdict asks the engine to do; ordered by severity."""

    CONTINUE = "continue"
    TEMPFAIL = "tempfail"
    REJECT = "reject"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Decision.CONTINUE: 0, Decision.TEMPFAIL: 1, Decision.REJECT: 2}


@dataclass(frozen=True)
class Reply:
    """An SMTP reply a filter wants sent: ``550 5.7.1 text``."""

    code: int
    enhanced: str
    text: str

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code out of range: {self.code}")
        if any(c in self.text for c in "\r\n"):
            raise ValueError("SMTP reply text must be a single line")

    def __str__(self) -> str:
        if self.enhanced:
            return f"{self.code} {self.enhanced} {self.text}"
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class Symbol:
    """A named, scored fact about a transaction (rspamd style)."""

    name: str
    score: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class HeaderRemoval:
    """Ask the engine to drop matching headers from the message before relaying.

    ``value_prefix`` (compared case-insensitively, after leading whitespace) narrows
    the match, e.g. only the ``Authentication-Results`` headers with our authserv-id.
    """

    name: str
    value_prefix: str | None = None

    def matches(self, name: str, value: str) -> bool:
        if name.strip().lower() != self.name.lower():
            return False
        if self.value_prefix is None:
            return True
        return value.strip().lower().startswith(self.value_prefix.lower())


@dataclass(frozen=True)
class Verdict:
    """A filter's answer for one phase."""

    decision: Decision = Decision.CONTINUE
    reply: Reply | None = None
    symbols: tuple[Symbol, ...] = ()
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[HeaderRemoval, ...] = ()

    def __post_init__(self) -> None:
        if self.decision is not Decision.CONTINUE and self.reply is None:
            raise ValueError(f"a {self.decision.value} verdict needs a Reply")

    @classmethod
    def cont(
        cls,
        *symbols: Symbol,
        add_headers: Sequence[tuple[str, str]] = (),
        remove_headers: Sequence[HeaderRemoval] = (),
    ) -> Verdict:
        return cls(Decision.CONTINUE, None, tuple(symbols), tuple(add_headers), tuple(remove_headers))

    @classmethod
    def reject(
        cls,
        reply: Reply,
        *symbols: Symbol,
        add_headers: Sequence[tuple[str, str]] = (),
    ) -> Verdict:
        return cls(Decision.REJECT, reply, tuple(symbols), tuple(add_headers))

    @classmethod
    def tempfail(
        cls,
        reply: Reply,
        *symbols: Symbol,
        add_headers: Sequence[tuple[str, str]] = (),
    ) -> Verdict:
        return cls(Decision.TEMPFAIL, reply, tuple(symbols), tuple(add_headers))


CONTINUE = Verdict()


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


@runtime_checkable
class Filter(Protocol):
    """What the engine needs from a filter instance."""

    name: str
    phases: frozenset[Phase]
    symbols: frozenset[str]

    async def check(self, phase: Phase, ctx: Context) -> Verdict: ...

    async def close(self) -> None: ...


@runtime_checkable
class ReadyCheck(Protocol):
    """Optional: a filter with an external dependency (spamd, DNS) may also define ``ready``.

    The engine registers it as a ``/readyz`` check named ``filter:<name>``; it must return
    quickly and never raise for an unreachable dependency (return False).
    """

    async def ready(self) -> bool: ...


@runtime_checkable
class RefusalObserver(Protocol):
    """Optional: a filter told of every permanent refusal (5xx) the engine answers at connect,
    HELO, MAIL, RCPT or DATA, whoever made it: another filter, the engine's own policy
    (relaying, spoofing) or the backend (unknown user). Protocol errors (500, 501, 503) and
    AUTH failures are not refusals here. The ratelimit penalty box counts them.

    Called after the reply is written, in the background, within the filter's ``timeout``;
    an exception or a timeout is logged like the filter's other failures (once per outage),
    never seen by the client.
    """

    async def refused(self, phase: Phase, code: int, session: SessionInfo) -> None: ...


LearnKind = Literal["spam", "ham"]
LearnResult = Literal["learned", "known", "too_big"]


@runtime_checkable
class Learner(Protocol):
    """Optional: a filter that can be taught what is spam and what is ham.

    ``spamgate learn`` and "release and learn as ham" (CLI and console) find the filter by
    its entry point and call ``learn`` when it implements this; the engine never imports a
    built-in for it. Raise a ``DependencyError`` when the teacher (e.g. spamd) can't be asked.
    """

    async def learn(self, raw: bytes, kind: LearnKind) -> LearnResult: ...


class FilterFactory(Protocol):
    """The object an entry point names: usually the filter class itself."""

    def __call__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> Filter: ...
