"""The protocols of the filter contract: what the engine needs from a filter object.

:class:`Filter` is required (and :class:`FilterFactory` builds one); :class:`ReadyCheck`,
:class:`RefusalObserver` and :class:`Learner` are optional capabilities the engine checks
for with ``isinstance``. Re-exported by :mod:`spamgate.filters.sdk.api`, where plugin
authors import them from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from spamgate.filters.sdk.context import Context, FilterEnv, SessionInfo
from spamgate.filters.sdk.verdict import Phase, Verdict

__all__ = [
    "Filter", "FilterFactory", "LearnKind", "LearnResult", "Learner", "ReadyCheck", "RefusalObserver",
]


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
