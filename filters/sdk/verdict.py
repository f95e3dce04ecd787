"""The verdict side of the filter contract: what a filter answers for one phase.

``Phase`` names the SMTP phase; a :class:`Verdict` carries a :class:`Decision`, the
:class:`Reply` the engine sends for a hard decision, the :class:`Symbol` facts that add up
to the score, and the headers to add or (:class:`HeaderRemoval`) drop. Pure values, no I/O.
Re-exported by :mod:`spamgate.filters.sdk.api`, where plugin authors import them from.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CONTINUE", "Decision", "HeaderRemoval", "Phase", "Reply", "Symbol", "Verdict"]


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
