"""ratelimit: connections, messages and recipients per client IP or per logged-in user, cluster-wide.

Counters live in ``FilterEnv.state`` (memory, or Redis shared by every instance), in fixed
windows: a minute for connections, an hour for messages and recipients. A logged-in
session is counted against its user (``user_*`` limits), anyone else against the client IP
(``ip_*`` limits); 0 means no limit.

=====================  =====  ========================================================
limit                  phase  reply when exceeded
=====================  =====  ========================================================
*_connections_per_min  CONNECT/AUTH  ``421 4.7.0 Too many connections, slow down``
*_messages_per_hour    MAIL   ``451 4.7.1 Too many messages, try again later``
*_recipients_per_hour  RCPT   ``451 4.7.1 Too many recipients, try again later``
=====================  =====  ========================================================

Every refusal logs one line naming the limit (``ratelimit limit=ip_messages_per_hour``).

The SMTP penalty box (ASSP style): a client IP refused ``penalty_after`` times within
``penalty_window`` seconds is refused outright (``421 4.7.0``) for ``penalty_seconds``.
It counts this filter's own refusals and, with ``penalty_counts = "refusals"`` (the default),
every permanent refusal (5xx) the client gets at connect, HELO, MAIL, RCPT or DATA from
anyone: another filter, the engine (relaying, spoofing), the backend (unknown users). Told
through the SDK's ``RefusalObserver``; logged-in users and ``exempt_networks`` are not counted.
``"own"`` counts only this filter's. Its keys (``pbox:smtp:*``) are separate from the engine's
AUTH-failure penalty box (``[auth] max_failures``), so a misbehaving client is kept out of
every instance without touching the login lockout.

``on_state_error``: ``continue`` (default; mail flows unlimited, the outage is logged once
and counted) or ``tempfail``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from spamgate.filters.sdk.api import Context, FilterEnv, Phase, Reply, SessionInfo, Symbol, Verdict
from spamgate.filters.sdk.metrics import Counter, MetricSpec
from spamgate.filters.sdk.options import FilterOptions, Networks, parse_options
from spamgate.filters.sdk.outage import Outage
from spamgate.filters.sdk.state import StateError
from spamgate.filters.services.state_keys import digest, env_store

__all__ = ["RateLimitFilter", "RateLimitOptions"]

log = logging.getLogger("spamgate.filters.ratelimit")

SYM_LIMITED = "RATELIMITED"
SYM_BOXED = "PENALTY_BOX"
SYM_STATE_ERROR = "RATELIMIT_STATE_ERROR"

_TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, slow down")
_TOO_MANY_MESSAGES = Reply(451, "4.7.1", "Too many messages, try again later")
_TOO_MANY_RECIPIENTS = Reply(451, "4.7.1", "Too many recipients, try again later")
_BOXED = Reply(421, "4.7.0", "Too many rejected commands, try again later")
_UNAVAILABLE = Reply(451, "4.3.0", "Rate limits unavailable, please try again later")


class RateLimitOptions(FilterOptions):
    ip_connections_per_minute: int = Field(default=0, ge=0)
    ip_messages_per_hour: int = Field(default=0, ge=0)
    ip_recipients_per_hour: int = Field(default=0, ge=0)
    user_connections_per_minute: int = Field(default=0, ge=0)
    user_messages_per_hour: int = Field(default=0, ge=0)
    user_recipients_per_hour: int = Field(default=0, ge=0)
    exempt_networks: Networks = ()
    penalty_after: int = Field(default=0, ge=0)
    penalty_window: float = Field(default=600.0, gt=0)
    penalty_seconds: float = Field(default=900.0, gt=0)
    penalty_counts: Literal["refusals", "own"] = "refusals"
    on_state_error: Literal["continue", "tempfail"] = "continue"


@dataclass(frozen=True)
class _Metrics:
    hits: Counter
    boxed: Counter
    state_errors: Counter


HITS = MetricSpec(
    "counter", "spamgate_ratelimit_hits_total",
    "Requests refused by a rate limit", ("limit",),
)
BOXED = MetricSpec(
    "counter", "spamgate_penalty_box_total",
    "SMTP penalty box events (boxed, refused)", ("event",),
)
STATE_ERRORS = MetricSpec(
    "counter", "spamgate_ratelimit_state_errors_total",
    "Rate-limit checks the state store could not answer", (),
)


# phase -> (limit suffix, window seconds, reply)
_LIMITS = {
    Phase.CONNECT: ("connections_per_minute", 60.0, _TOO_MANY_CONNECTIONS),
    Phase.AUTH: ("connections_per_minute", 60.0, _TOO_MANY_CONNECTIONS),
    Phase.MAIL: ("messages_per_hour", 3600.0, _TOO_MANY_MESSAGES),
    Phase.RCPT: ("recipients_per_hour", 3600.0, _TOO_MANY_RECIPIENTS),
}


class RateLimitFilter:
    phases = frozenset(_LIMITS)
    symbols = frozenset({SYM_LIMITED, SYM_BOXED, SYM_STATE_ERROR})

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.opts = parse_options(RateLimitOptions, options)
        self.store = env_store(env)
        self.outage = Outage(f"state:{name}", log)
        self.m = _Metrics(HITS.counter(env.metrics), BOXED.counter(env.metrics), STATE_ERRORS.counter(env.metrics))

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        if self._exempt(ctx.session):
            return Verdict.cont()
        try:
            verdict = await self._check(phase, ctx)
        except StateError as exc:
            self.outage.failed(str(exc))
            self.m.state_errors.inc()
            symbol = Symbol(SYM_STATE_ERROR, 0.0, str(exc))
            if self.opts.on_state_error == "tempfail":
                return Verdict.tempfail(_UNAVAILABLE, symbol)
            return Verdict.cont(symbol)
        self.outage.ok()
        return verdict

    def _exempt(self, session: SessionInfo) -> bool:
        addr = session.peer_address
        return addr is not None and any(addr in n for n in self.opts.exempt_networks)

    async def _check(self, phase: Phase, ctx: Context) -> Verdict:
        ip = ctx.session.peer_ip
        if self.opts.penalty_after and phase in (Phase.CONNECT, Phase.MAIL):
            if await self.store.get(f"pbox:smtp:box:{digest(ip)}") is not None:
                self.m.boxed.labels("refused").inc()
                log.info("ratelimit limit=penalty_box client=%s", ip)
                return Verdict.tempfail(_BOXED, Symbol(SYM_BOXED, 0.0, ip))
        user = ctx.session.authenticated_user
        if phase is Phase.AUTH:
            if ctx.auth is None or not ctx.auth.success:
                return Verdict.cont()
            user = ctx.auth.username
        suffix, window, reply = _LIMITS[phase]
        scope, who = ("user", user) if user is not None else ("ip", ip)
        if phase is Phase.AUTH and scope == "ip":
            return Verdict.cont()
        if phase is Phase.CONNECT and scope == "user":
            return Verdict.cont()
        limit_name = f"{scope}_{suffix}"
        limit: int = getattr(self.opts, limit_name)
        if not limit:
            return Verdict.cont()
        count = await self.store.incr(f"rl:{limit_name}:{digest(who)}", window)
        if count <= limit:
            return Verdict.cont()
        self.m.hits.labels(limit_name).inc()
        log.info("ratelimit limit=%s %s=%s count=%d max=%d", limit_name, scope, who, count, limit)
        await self._penalise(ip)
        return Verdict.tempfail(reply, Symbol(SYM_LIMITED, 0.0, f"{limit_name} {count}>{limit}"))

    async def refused(self, phase: Phase, code: int, session: SessionInfo) -> None:
        """Anyone's permanent refusal of this client counts toward its penalty box too."""
        if not self.opts.penalty_after or self.opts.penalty_counts != "refusals":
            return
        if session.authenticated_user is not None or self._exempt(session):
            return  # a user's typo is not an attack: the user_* limits are theirs
        try:
            await self._penalise(session.peer_ip)
        except StateError as exc:
            self.outage.failed(str(exc))
            self.m.state_errors.inc()
            return
        self.outage.ok()
        log.debug("ratelimit refusal-counted client=%s phase=%s code=%d", session.peer_ip, phase.value, code)

    async def _penalise(self, ip: str) -> None:
        after = self.opts.penalty_after
        if not after:
            return
        n = await self.store.incr(f"pbox:smtp:n:{digest(ip)}", self.opts.penalty_window)
        if n == after:
            await self.store.set(f"pbox:smtp:box:{digest(ip)}", "1", self.opts.penalty_seconds)
            self.m.boxed.labels("boxed").inc()
            log.warning("ratelimit penalty-box client=%s rejections=%d seconds=%g", ip, n, self.opts.penalty_seconds)

    async def close(self) -> None:
        pass
