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

This module is the one place to import the contract from (or :mod:`spamgate.filters.sdk`);
it only gathers it. The types live in three modules: :mod:`~spamgate.filters.sdk.verdict`
(what a filter answers), :mod:`~spamgate.filters.sdk.context` (what it sees) and
:mod:`~spamgate.filters.sdk.protocols` (what it must be).
"""

# Re-exports only: names listed in __all__ are the public contract (mypy --strict needs them
# listed to see them re-exported). DnsSettings, the metrics and state types and OptionError
# appear in FilterEnv or the filter's constructor, so a plugin can import them from here too.
from spamgate.filters.sdk.context import (
    QUARANTINE_NOTE,
    AuthAttempt,
    Context,
    Envelope,
    FilterEnv,
    Message,
    SessionInfo,
    domain_of,
)
from spamgate.filters.sdk.dns import DnsSettings, Resolver
from spamgate.filters.sdk.errors import OptionError
from spamgate.filters.sdk.metrics import MemoryMetrics, Metrics
from spamgate.filters.sdk.protocols import (
    Filter,
    FilterFactory,
    Learner,
    LearnKind,
    LearnResult,
    ReadyCheck,
    RefusalObserver,
)
from spamgate.filters.sdk.state import StateStore
from spamgate.filters.sdk.verdict import CONTINUE, Decision, HeaderRemoval, Phase, Reply, Symbol, Verdict

__all__ = [
    "CONTINUE",
    "QUARANTINE_NOTE",
    "AuthAttempt",
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
    "MemoryMetrics",
    "Message",
    "Metrics",
    "OptionError",
    "Phase",
    "ReadyCheck",
    "RefusalObserver",
    "Reply",
    "Resolver",
    "SessionInfo",
    "StateStore",
    "Symbol",
    "Verdict",
    "domain_of",
]
