"""The ``spamassassin`` filter: content scoring by a real spamd, at end of DATA.

spamd's score becomes one symbol (``SPAMD`` by default) weighted ``score * score_scale``;
the pipeline's ``[actions]`` thresholds then choose the action, so GTUBE (1000 points) is
rejected and a clean message is relayed with the engine's X-Spam-Status/X-Spam-Score.
SpamAssassin's rule names travel in the symbol's detail and in an ``X-Spamd-Result``
header, so every relayed message can say why.

Inbound X-Spam-* headers are always asked to be removed (also when the message is too
big to scan), so no sender can hand us a pre-made "clean" verdict.

spamd being down or slow is not handled here: the error is counted and raised, and the
engine's ``on_error`` for ``[filters.spamassassin]`` decides (``continue`` adds a
zero-weight ``SPAMASSASSIN_ERROR`` symbol, ``tempfail`` answers 451). A semaphore keeps
at most ``max_concurrency`` scans in flight, so a burst queues here instead of
overloading spamd's fixed pool of children.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from spamgate.filters.sdk.api import Context, FilterEnv, HeaderRemoval, LearnKind, LearnResult, Phase, Symbol, Verdict
from spamgate.filters.sdk.metrics import MetricSpec
from spamgate.filters.sdk.options import FilterOptions, parse_options
from spamgate.filters.services.spamd_client import SpamdClient, SpamdError, SpamdResult, SpamdSettings

__all__ = ["SKIPPED_SIZE", "STRIPPED_HEADERS", "SpamAssassinFilter", "SpamAssassinOptions"]

SKIPPED_SIZE = "SPAMD_SKIPPED_SIZE"
RESULT_HEADER = "X-Spamd-Result"

# Headers SpamAssassin (and rspamd) write: from outside they can only be forgeries.
STRIPPED_HEADERS = (
    "X-Spam-Status",
    "X-Spam-Flag",
    "X-Spam-Score",
    "X-Spam-Level",
    "X-Spam-Bar",
    "X-Spam-Checker-Version",
    "X-Spam-Report",
    "X-Spam-Tests",
    "X-Spam",
    RESULT_HEADER,
    "X-Spamd-Bar",
)

_HEADER_MAX = 900  # keep our header well under RFC 5322's 998-octet line limit

SCANS = MetricSpec(
    "counter", "spamgate_spamd_scans_total", "spamd scans by result (spam/ham per spamd, or error)", ("result",)
)
SCAN_DURATION = MetricSpec(
    "histogram",
    "spamgate_spamd_scan_duration_seconds",
    "spamd round trip per scan (after waiting for a concurrency slot)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 30),
)
SCORE = MetricSpec(
    "histogram",
    "spamgate_spamd_score",
    "spamd's score per scanned message (before score_scale)",
    buckets=(-5, -2, 0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50, 100, 1000),
)
ERRORS = MetricSpec(
    "counter", "spamgate_spamd_errors_total", "spamd failures (connect, timeout, protocol, spamd)", ("kind",)
)
SKIPPED = MetricSpec("counter", "spamgate_spamd_skipped_total", "Messages not sent to spamd", ("reason",))

_SAFE_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,63}$")
_SYMBOL_NAME = r"^[A-Z][A-Z0-9_]*$"


class SpamAssassinOptions(FilterOptions):
    host: str = "127.0.0.1"
    port: int = Field(default=783, ge=1, le=65535)
    socket: str | None = None
    verb: Literal["symbols", "report"] = "symbols"
    user: str | None = Field(default=None, pattern=_SAFE_USER.pattern)
    per_user: bool = False
    max_size: int = Field(default=512_000, gt=0)
    score_scale: float = 1.0
    symbol: str = Field(default="SPAMD", pattern=_SYMBOL_NAME)
    max_concurrency: int = Field(default=5, ge=1)
    scan_timeout: float = Field(default=8.0, gt=0)
    connect_timeout: float = Field(default=2.0, gt=0)
    result_header: bool = True
    add_received: bool = True
    strip_headers: tuple[str, ...] = STRIPPED_HEADERS


class SpamAssassinFilter:
    """Score the message with spamd; see the module docstring."""

    phases = frozenset({Phase.DATA})

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.env = env
        self.opts = parse_options(SpamAssassinOptions, options)
        o = self.opts
        self.settings = SpamdSettings(o.host, o.port, o.socket, o.scan_timeout, o.connect_timeout)
        self.symbols = frozenset({o.symbol, SKIPPED_SIZE})
        # One client for the filter's lifetime: aiospamc's per-call helpers are costly.
        self.client = SpamdClient(self.settings)
        self._slots = asyncio.Semaphore(o.max_concurrency)
        self._removals = tuple(HeaderRemoval(h) for h in o.strip_headers)
        m = env.metrics
        self._scans, self._errors, self._skipped = SCANS.counter(m), ERRORS.counter(m), SKIPPED.counter(m)
        self._duration, self._score = SCAN_DURATION.histogram(m), SCORE.histogram(m)

    def user_for(self, ctx: Context) -> str | None:
        """The spamd ``User`` for per-user settings: first local recipient, else the option."""
        if self.opts.per_user:
            for rcpt in ctx.envelope.recipients:
                local, _, domain = rcpt.strip("<>").rpartition("@")
                if not local or (self.env.local_domains and not self.env.is_local_domain(domain)):
                    continue
                local = local.lower()
                if _SAFE_USER.match(local):
                    return local
        return self.opts.user

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        msg = ctx.message
        if msg is None:
            return Verdict.cont(remove_headers=self._removals)
        size = len(msg.raw)
        if size > self.opts.max_size:
            self._skipped.labels("size").inc()
            detail = f"{size} bytes > max_size {self.opts.max_size}"
            return Verdict.cont(Symbol(SKIPPED_SIZE, 0.0, detail), remove_headers=self._removals)
        # The engine's own trace header for our hop, so SpamAssassin sees the untrusted relay.
        raw = ctx.received + msg.raw if self.opts.add_received else msg.raw
        user = self.user_for(ctx)
        async with self._slots:
            start = time.perf_counter()
            try:
                result = await self.client.scan(raw, self.opts.verb, user)
            except SpamdError as exc:
                self._errors.labels(exc.kind).inc()
                self._scans.labels("error").inc()
                raise
            finally:
                self._duration.observe(time.perf_counter() - start)
        self._scans.labels("spam" if result.is_spam else "ham").inc()
        self._score.observe(result.score)
        return self._verdict(result)

    def _verdict(self, result: SpamdResult) -> Verdict:
        weight = round(result.score * self.opts.score_scale, 3)
        tests = ",".join(r.name if r.score is None else f"{r.name}({r.score:g})" for r in result.rules) or "none"
        summary = f"score={result.score:.1f} required={result.threshold:.1f} tests={tests}"
        headers: list[tuple[str, str]] = []
        if self.opts.result_header:
            value = f"{'Yes' if result.is_spam else 'No'}, {summary}"
            if len(value) > _HEADER_MAX:
                value = value[: _HEADER_MAX - 3].rsplit(",", 1)[0] + ",..."
            headers.append((RESULT_HEADER, value))
        symbol = Symbol(self.opts.symbol, weight, summary)
        return Verdict.cont(symbol, add_headers=headers, remove_headers=self._removals)

    async def learn(self, raw: bytes, kind: LearnKind) -> LearnResult:
        """TELL spamd (it needs --allow-tell): the Learner protocol, for ``spamgate learn``."""
        if len(raw) > self.opts.max_size:
            return "too_big"
        return "learned" if await self.client.tell(raw, kind, self.opts.user) else "known"

    async def ready(self) -> bool:
        """/readyz: spamd answers PING."""
        try:
            await self.client.ping()
        except SpamdError:
            return False
        return True

    async def close(self) -> None:
        """Nothing to release: every spamd request opens and closes its own connection."""
