"""Public helpers for testing filters without a network or an SMTP server.

Example::

    from spamgate.filters.sdk.testing import make_context, run_filter
    verdict = await run_filter(MyFilter("mine", {}, FilterEnv()), Phase.DATA,
                               make_context(Phase.DATA, message=b"Subject: hi\\r\\n\\r\\nbody\\r\\n"))

``run_pipeline`` runs several filters through the same runner the engine uses
(timeouts, error policy, merge order, scoring and the final action).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spamgate.filters.sdk.api import (
    AuthAttempt,
    Context,
    Envelope,
    Filter,
    Message,
    Phase,
    SessionInfo,
    Verdict,
)
from spamgate.filters.sdk.metrics import MemoryMetrics
from spamgate.filters.sdk.runner import (
    FilterSettings,
    PhaseResult,
    Pipeline,
    Scoreboard,
    Slot,
    UndeclaredSymbol,
    undeclared_symbols,
)
from spamgate.filters.sdk.scoring import Action, Thresholds, choose_action

__all__ = [
    "FakeClock", "MemoryMetrics", "PipelineRun", "UndeclaredSymbol", "canonical", "make_context", "run_filter",
    "run_pipeline",
]


class FakeClock:
    """A clock the test moves by hand, for anything that takes ``clock: Callable[[], float]``
    (``MemoryStore(clock=...)``, a filter's own expiry): read it by calling it, move it with
    ``advance`` or by setting ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def canonical(message: bytes | str) -> bytes:
    """Turn a message written with bare LFs into the canonical CRLF form filters see."""
    data = message.encode() if isinstance(message, str) else message
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def make_context(
    phase: Phase = Phase.DATA,
    *,
    peer_ip: str = "192.0.2.10",
    helo: str | None = "client.example.org",
    reverse_name: str | None = None,
    client_name: str | None = None,
    tls: bool = False,
    user: str | None = None,
    role: str = "mx",
    mail_from: str | None = "sender@example.org",
    recipients: Sequence[str] = ("user@example.edu",),
    rcpt: str | None = None,
    message: bytes | str | None = None,
    auth: AuthAttempt | None = None,
    notes: dict[str, Any] | None = None,
    session_id: str = "test",
    received: bytes | str = b"",
) -> Context:
    session = SessionInfo(
        session_id=session_id,
        peer_ip=peer_ip,
        reverse_name=reverse_name,
        client_name=client_name,
        helo=helo,
        tls=tls,
        authenticated_user=user,
        listener_role=role,
    )
    if phase is Phase.RCPT and rcpt is None and recipients:
        rcpt = recipients[-1]
    env = Envelope(mail_from=mail_from, recipients=tuple(recipients), rcpt=rcpt)
    msg = Message(canonical(message)) if message is not None else None
    trace = canonical(received) if received else b""
    return Context(phase, session, env, msg, auth, notes if notes is not None else {}, trace)


async def run_filter(flt: Filter, phase: Phase, ctx: Context) -> Verdict:
    """Call one filter directly (no timeout, no error guard: exceptions propagate).

    Raises :class:`UndeclaredSymbol` when the verdict carries a symbol the filter did not
    declare in ``symbols`` (in production the engine counts that as a filter bug).
    """
    verdict = await flt.check(phase, ctx)
    undeclared = undeclared_symbols(flt, verdict)
    if undeclared:
        raise UndeclaredSymbol(f"filter {flt.name!r} emitted undeclared symbols: {', '.join(undeclared)}")
    return verdict


@dataclass
class PipelineRun:
    results: dict[Phase, PhaseResult] = field(default_factory=dict)
    board: Scoreboard = field(default_factory=Scoreboard)
    action: Action = Action.ACCEPT

    @property
    def score(self) -> float:
        return self.board.score

    @property
    def symbols(self) -> list[str]:
        return [e.symbol.name for e in self.board.entries]


async def run_pipeline(
    filters: Iterable[Filter | tuple[Filter, FilterSettings]],
    ctx: Context,
    phases: Sequence[Phase] = tuple(Phase),
    thresholds: Thresholds | None = None,
) -> PipelineRun:
    """Run ``filters`` through each phase in turn (stopping at the first hard verdict).

    Like :func:`run_filter`, an undeclared symbol raises :class:`UndeclaredSymbol`.
    """
    slots = [Slot(f[0], f[1]) if isinstance(f, tuple) else Slot(f) for f in filters]
    pipeline = Pipeline(slots, strict_symbols=True)
    run = PipelineRun()
    for phase in phases:
        pctx = Context(phase, ctx.session, ctx.envelope, ctx.message, ctx.auth, ctx.notes, ctx.received)
        result = await pipeline.run(phase, pctx, run.board)
        run.results[phase] = result
        if result.reply is not None:
            break
    run.action = choose_action(run.board.score, thresholds or Thresholds())
    return run
