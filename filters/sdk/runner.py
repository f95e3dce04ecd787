"""Run the filters of one phase concurrently, contain their failures, merge in order.

This is the pure core of the pipeline (no sockets, no config files, no metrics), so
plugin authors can run a whole pipeline in their tests (see ``filters.testing``) and
the engine (``proxy.pipeline``) adds configuration, metrics and logging around it.

Merge rules:

* filters of a phase run concurrently; each ``check`` has its own timeout and an
  ``Exception`` guard (never ``BaseException``: a client disconnect cancels us);
* a timeout or exception becomes the filter's ``on_error`` verdict: ``continue`` with
  a zero-weight ``<NAME>_ERROR`` symbol, or ``tempfail``;
* the most severe enforced decision wins (reject > tempfail > continue); ties go to
  the filter with the lowest ``order``, so the outcome is deterministic;
* observe-mode filters run and are reported but never decide, and their symbols are
  recorded with score 0 (the would-be score is kept for the explanation);
* a symbol the filter emits but did not declare in ``Filter.symbols`` is a bug in the
  filter: ``Outcome.undeclared`` names it (the engine counts and logs it, the mail goes
  on); with ``strict_symbols`` (the testing helpers) it raises :class:`UndeclaredSymbol`.
  The ``<NAME>_ERROR`` symbol is the runner's own, so a filter never declares it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spamgate.filters.sdk.api import (
    Context,
    Decision,
    Filter,
    HeaderRemoval,
    Phase,
    RefusalObserver,
    Reply,
    SessionInfo,
    Symbol,
    Verdict,
)
from spamgate.filters.sdk.errors import SpamgateError
from spamgate.filters.sdk.options import Networks, lists_to_tuples
from spamgate.filters.sdk.outage import Outage

__all__ = [
    "ERROR_TEMPFAIL_REPLY",
    "FilterSettings",
    "Outcome",
    "PhaseResult",
    "Pipeline",
    "ScoreEntry",
    "Scoreboard",
    "Slot",
    "UndeclaredSymbol",
    "undeclared_symbols",
]

log = logging.getLogger("spamgate.pipeline")

ERROR_TEMPFAIL_REPLY = Reply(451, "4.7.1", "Temporary local problem, please try again later")


class UndeclaredSymbol(SpamgateError, AssertionError):
    """A filter emitted a symbol missing from its ``symbols`` (raised only by the testing helpers)."""


def undeclared_symbols(flt: Filter, verdict: Verdict) -> tuple[str, ...]:
    """The names in ``verdict`` that ``flt`` did not declare, in order, without repeats."""
    declared = flt.symbols
    return tuple(dict.fromkeys(s.name for s in verdict.symbols if s.name not in declared))


class FilterSettings(BaseModel):
    """The keys every ``[filters.<name>]`` table has, whatever the filter.

    The engine's config table (``FilterTable``) is this model plus the filter's own options;
    strict like every config model (``timeout = "5"`` is an error, not 5).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _arrays(cls, data: Any) -> Any:
        return lists_to_tuples(cls, data)

    enabled: bool = True
    order: int = 100
    timeout: float = Field(default=10.0, gt=0)
    on_error: Literal["continue", "tempfail"] = "continue"
    max_score: float | None = None
    skip_authenticated: bool = False
    skip_networks: Networks = ()
    mode: Literal["enforce", "observe"] = "enforce"


@dataclass(frozen=True)
class Slot:
    filter: Filter
    settings: FilterSettings = field(default_factory=FilterSettings)

    @property
    def name(self) -> str:
        return self.filter.name


@dataclass(frozen=True)
class Outcome:
    """One filter's result for one phase, after the error policy was applied."""

    filter: str
    phase: Phase
    verdict: Verdict
    duration: float
    error: Literal["timeout", "exception"] | None = None
    observed: bool = False
    undeclared: tuple[str, ...] = ()  # symbols the filter emitted without declaring them


@dataclass(frozen=True)
class PhaseResult:
    decision: Decision
    reply: Reply | None
    decided_by: str | None
    outcomes: tuple[Outcome, ...]


@dataclass(frozen=True)
class ScoreEntry:
    filter: str
    symbol: Symbol
    score: float  # what counts, after caps and observe mode
    observed: bool = False


@dataclass
class Scoreboard:
    """Symbols, headers and removals collected over a transaction."""

    entries: list[ScoreEntry] = field(default_factory=list)
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[HeaderRemoval] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(sum(e.score for e in self.entries), 3)

    def filter_total(self, name: str) -> float:
        return sum(e.score for e in self.entries if e.filter == name)

    def copy(self) -> Scoreboard:
        return Scoreboard(
            list(self.entries), list(self.add_headers), list(self.remove_headers), list(self.observed)
        )

    def record(self, outcome: Outcome, max_score: float | None) -> None:
        v = outcome.verdict
        for sym in v.symbols:
            if outcome.observed:
                self.entries.append(ScoreEntry(outcome.filter, sym, 0.0, observed=True))
                continue
            score = sym.score
            if max_score is not None and score > 0:
                room = max(0.0, max_score - self.filter_total(outcome.filter))
                score = min(score, room)
            self.entries.append(ScoreEntry(outcome.filter, sym, score))
        if outcome.observed:
            if v.decision is not Decision.CONTINUE:
                self.observed.append(
                    f"{outcome.filter} would {v.decision.value} at {outcome.phase.value}: {v.reply}"
                )
            return
        self.add_headers.extend(v.add_headers)
        self.remove_headers.extend(v.remove_headers)


OutcomeListener = Callable[[Outcome, Context], None]


def _skipped(slot: Slot, ctx: Context) -> bool:
    s = slot.settings
    if s.skip_authenticated and ctx.session.authenticated_user:
        return True
    if s.skip_networks:
        addr = ctx.session.peer_address
        if addr is not None and any(addr in net for net in s.skip_networks):
            return True
    return False


class Pipeline:
    """An ordered, immutable set of filters; one per config generation."""

    def __init__(
        self, slots: Sequence[Slot], listener: OutcomeListener | None = None, *, strict_symbols: bool = False
    ) -> None:
        self.strict_symbols = strict_symbols
        self.slots = tuple(sorted((s for s in slots if s.settings.enabled), key=lambda s: s.settings.order))
        self.listener = listener
        # A filter failing on every message is one fact (spamd is down), not one log line per message.
        self._outages = {s.name: Outage(f"filter:{s.name}", log) for s in self.slots}
        self._by_phase = {
            phase: tuple(s for s in self.slots if phase in s.filter.phases) for phase in Phase
        }
        # Empty for most configs: the engine then tells nobody of a refusal, at no cost.
        self.observers = tuple(s for s in self.slots if isinstance(s.filter, RefusalObserver))

    def filters_for(self, phase: Phase) -> tuple[Slot, ...]:
        return self._by_phase[phase]

    async def _run_one(self, slot: Slot, phase: Phase, ctx: Context) -> Outcome:
        observed = slot.settings.mode == "observe"
        start = time.perf_counter()
        error: Literal["timeout", "exception"] | None = None
        try:
            # In this task, not a new one as wait_for makes: most checks finish without waiting at all.
            async with asyncio.timeout(slot.settings.timeout):
                verdict = await slot.filter.check(phase, ctx)
            if not isinstance(verdict, Verdict):
                raise TypeError(f"check() returned {type(verdict).__name__}, not Verdict")
        except TimeoutError as exc:
            error = "timeout"
            self._outage(slot).failed(f"timeout after {slot.settings.timeout:g}s", exc)
            log.debug("filter=%s phase=%s error=timeout", slot.name, phase.value)
        except Exception as exc:
            error = "exception"
            self._outage(slot).failed(f"{type(exc).__name__}: {exc}", exc)
            log.debug("filter=%s phase=%s error=%r", slot.name, phase.value, exc)
        else:
            self._outage(slot).ok()
        undeclared: tuple[str, ...] = ()
        if error is not None:
            verdict = self._error_verdict(slot, error)
        else:
            undeclared = undeclared_symbols(slot.filter, verdict)
            if undeclared and self.strict_symbols:
                raise UndeclaredSymbol(f"filter {slot.name!r} emitted undeclared symbols: {', '.join(undeclared)}")
        outcome = Outcome(slot.name, phase, verdict, time.perf_counter() - start, error, observed, undeclared)
        if self.listener is not None:
            self.listener(outcome, ctx)
        return outcome

    async def tell_refused(self, phase: Phase, code: int, session: SessionInfo) -> None:
        """Every RefusalObserver hears of a 5xx the engine answered; each within its timeout, errors contained."""
        for slot in self.observers:
            observer = slot.filter
            assert isinstance(observer, RefusalObserver)
            try:
                async with asyncio.timeout(slot.settings.timeout):
                    await observer.refused(phase, code, session)
            except TimeoutError as exc:
                self._outage(slot).failed(f"timeout after {slot.settings.timeout:g}s (refused)", exc)
            except Exception as exc:
                self._outage(slot).failed(f"{type(exc).__name__}: {exc} (refused)", exc)

    def _outage(self, slot: Slot) -> Outage:
        outage = self._outages.get(slot.name)
        if outage is None:
            outage = self._outages[slot.name] = Outage(f"filter:{slot.name}", log)
        return outage

    @staticmethod
    def _error_verdict(slot: Slot, error: str) -> Verdict:
        sym = Symbol(f"{slot.name.upper()}_ERROR", 0.0, error)
        if slot.settings.on_error == "tempfail":
            return Verdict.tempfail(ERROR_TEMPFAIL_REPLY, sym)
        return Verdict.cont(sym)

    async def run(self, phase: Phase, ctx: Context, board: Scoreboard) -> PhaseResult:
        slots = [s for s in self._by_phase[phase] if not _skipped(s, ctx)]
        if not slots:
            return PhaseResult(Decision.CONTINUE, None, None, ())
        if len(slots) == 1:
            outcomes: Sequence[Outcome] = [await self._run_one(slots[0], phase, ctx)]
        else:
            outcomes = await asyncio.gather(*(self._run_one(s, phase, ctx) for s in slots))
        decision, reply, decided_by = Decision.CONTINUE, None, None
        for slot, outcome in zip(slots, outcomes, strict=True):
            board.record(outcome, slot.settings.max_score)
            v = outcome.verdict
            if not outcome.observed and v.decision.severity > decision.severity:
                decision, reply, decided_by = v.decision, v.reply, slot.name
        return PhaseResult(decision, reply, decided_by, tuple(outcomes))

    async def close(self) -> None:
        for slot in self.slots:
            try:
                await slot.filter.close()
            except Exception:
                log.exception("filter=%s error=close-failed", slot.name)
