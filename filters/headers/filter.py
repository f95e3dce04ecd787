"""headers: forged and malformed headers, each a named, scored symbol (or a reject).

The checks themselves are pure functions in ``filters.header_checks`` (RFC 5322
structure) and ``filters.header_spoof`` (identity forgery); this module only maps
their hits to symbols, scores and an optional ``550 5.7.1`` for ``reject_symbols``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from spamgate.filters.headers.checks import (
    Hit,
    StructureLimits,
    address_hits,
    count_hits,
    date_hits,
    parse_fields,
    structure_hits,
)
from spamgate.filters.headers.spoof import SpoofFacts, spoof_hits
from spamgate.filters.sdk.api import Context, FilterEnv, OptionError, Phase, Reply, Symbol, Verdict
from spamgate.filters.sdk.options import FilterOptions, parse_options

__all__ = ["DEFAULT_SCORES", "HeadersFilter", "HeadersOptions", "check_message"]

DEFAULT_SCORES: dict[str, float] = {
    "FROM_LOCAL_UNAUTH": 5.0,
    "DISPLAY_NAME_ADDRESS_MISMATCH": 3.0,
    "DISPLAY_NAME_PROTECTED": 4.0,
    "REPLYTO_FOREIGN_LOCAL_FROM": 3.0,
    "RECEIVED_FORGED_LOCAL": 5.0,
    "RECEIVED_TOO_MANY": 3.0,
    "MISSING_FROM": 3.0,
    "MULTIPLE_FROM": 3.0,
    "MISSING_DATE": 1.0,
    "MULTIPLE_DATE": 2.0,
    "MISSING_SUBJECT": 0.5,
    "MULTIPLE_SUBJECT": 1.5,
    "MISSING_MESSAGE_ID": 1.0,
    "DATE_INVALID": 1.5,
    "DATE_IN_FUTURE": 2.0,
    "DATE_IN_PAST": 1.0,
    "MALFORMED_ADDRESS_HEADER": 2.0,
    "HEADER_8BIT_NO_SMTPUTF8": 1.0,
    "HEADER_NO_COLON": 2.0,
    "HEADER_LINE_TOO_LONG": 1.0,
}


def _known(names: Any) -> Any:
    for sym in names:
        if sym not in DEFAULT_SCORES:
            raise ValueError(f"unknown symbol {sym!r} (known: {', '.join(sorted(DEFAULT_SCORES))})")
    return names


class HeadersOptions(FilterOptions):
    scores: dict[str, float] = Field(default_factory=dict)
    reject_symbols: tuple[str, ...] = ()
    protected_names: tuple[str, ...] = ()
    our_hosts: tuple[str, ...] | None = None
    max_received: int = Field(default=30, ge=1)
    max_line_length: int = Field(default=998, ge=78)
    max_future_hours: float = Field(default=12.0, ge=0)
    max_past_days: float = Field(default=7.0, ge=0)

    @field_validator("scores")
    @classmethod
    def _scores(cls, v: dict[str, float]) -> dict[str, float]:
        return _known(v)  # type: ignore[no-any-return]

    @field_validator("reject_symbols")
    @classmethod
    def _rejects(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _known(v)  # type: ignore[no-any-return]


def check_message(
    header_bytes: bytes,
    *,
    smtputf8: bool,
    facts: SpoofFacts,
    limits: StructureLimits,
    now: datetime,
) -> list[Hit]:
    """Every header check over one message; at most one hit per symbol."""
    parsed = parse_fields(header_bytes, limits.max_line_length)
    hits = [
        *structure_hits(parsed, smtputf8, limits),
        *count_hits(parsed),
        *date_hits(parsed, now, limits),
        *address_hits(parsed),
        *spoof_hits(parsed, facts),
    ]
    seen: set[str] = set()
    unique = []
    for hit in hits:
        if hit.symbol not in seen:
            seen.add(hit.symbol)
            unique.append(hit)
    return unique


class HeadersFilter:
    phases = frozenset({Phase.DATA})
    symbols = frozenset(DEFAULT_SCORES)

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.opts = parse_options(HeadersOptions, options)
        self.env = env
        self.scores = {**DEFAULT_SCORES, **self.opts.scores}
        hosts = self.opts.our_hosts if self.opts.our_hosts is not None else (env.hostname,)
        if any(not h.strip() for h in hosts):
            raise OptionError("our_hosts", "empty host name")
        self.our_hosts = tuple(h.strip().lower().rstrip(".") for h in hosts)
        self.limits = StructureLimits(
            self.opts.max_line_length, self.opts.max_future_hours, self.opts.max_past_days
        )

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        if phase is not Phase.DATA or ctx.message is None:
            return Verdict.cont()
        facts = SpoofFacts(
            authenticated=ctx.session.authenticated_user is not None,
            is_local=self.env.is_local_domain,
            protected_names=self.opts.protected_names,
            our_hosts=self.our_hosts,
            max_received=self.opts.max_received,
        )
        hits = check_message(
            ctx.message.header_bytes,
            smtputf8=ctx.envelope.smtputf8,
            facts=facts,
            limits=self.limits,
            now=datetime.now(UTC),
        )
        symbols = [Symbol(h.symbol, self.scores[h.symbol], h.detail) for h in hits]
        rejected = [h.symbol for h in hits if h.symbol in self.opts.reject_symbols]
        if rejected:
            reply = Reply(550, "5.7.1", f"Message rejected: header check {rejected[0]} failed")
            return Verdict.reject(reply, *symbols)
        return Verdict.cont(*symbols)

    async def close(self) -> None:
        pass
