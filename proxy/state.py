"""The engine's side of the StateStore seam: which store, and what a store error means.

The server builds one store at start-up and keeps it for its whole life: a SIGHUP
reload builds a new runtime (filters, backend, config) but hands over the same store,
so a boxed client stays boxed and open sessions stay counted.

A shared store can fail (Redis down, slow). The engine never lets that block mail:
its own uses (penalty box, per-IP session counts, DNS answers) follow
``on_state_error = "continue"``: the failure is counted in
``spamgate_state_errors_total{operation}``, reported once per outage (one log line down,
one up), and the operation is answered locally instead. Filters get a view that counts
and reports the same way but raises :class:`StateError`, so each filter applies its
own ``on_state_error`` (continue or tempfail).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from spamgate.filters.sdk.outage import Outage
from spamgate.filters.sdk.state import MemoryStore, StateError, StateStore
from spamgate.proxy import metrics
from spamgate.proxy.config import State

__all__ = ["GuardedStore", "StateSeam", "make_state"]

log = logging.getLogger("spamgate.state")

# What a store raises when it can't answer: its own StateError, or a timeout/socket error it let through.
STORE_ERRORS = (StateError, TimeoutError, OSError)


class GuardedStore:
    """A StateStore whose failures are counted and logged once per outage, then handled.

    ``on_error="continue"``: the operation is answered by ``fallback`` (a local store),
    so the caller goes on as a single instance would. ``on_error="raise"``: a
    :class:`StateError` reaches the caller, which decides.
    """

    def __init__(
        self,
        store: StateStore,
        outage: Outage,
        on_error: Literal["continue", "raise"] = "continue",
        fallback: StateStore | None = None,
    ) -> None:
        self.store = store
        self.outage = outage
        self.on_error = on_error
        self.fallback = fallback if fallback is not None else MemoryStore(max_entries=100_000)

    def _failed(self, operation: str, exc: Exception) -> StateStore:
        metrics.STATE_ERRORS.labels(operation).inc()
        self.outage.failed(f"{operation}: {type(exc).__name__}: {exc}", exc)
        if self.on_error == "raise":
            if isinstance(exc, StateError):
                raise exc
            raise StateError(f"state store {operation}: {exc}") from exc
        return self.fallback

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        try:
            value = await self.store.incr(key, ttl, amount)
        except STORE_ERRORS as exc:
            return await self._failed("incr", exc).incr(key, ttl, amount)
        self.outage.ok()
        return value

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        try:
            done = await self.store.set_if_absent(key, value, ttl)
        except STORE_ERRORS as exc:
            return await self._failed("set_if_absent", exc).set_if_absent(key, value, ttl)
        self.outage.ok()
        return done

    async def set(self, key: str, value: str, ttl: float) -> None:
        try:
            await self.store.set(key, value, ttl)
        except STORE_ERRORS as exc:
            await self._failed("set", exc).set(key, value, ttl)
            return
        self.outage.ok()

    async def get(self, key: str) -> str | None:
        try:
            value = await self.store.get(key)
        except STORE_ERRORS as exc:
            return await self._failed("get", exc).get(key)
        self.outage.ok()
        return value

    async def delete(self, key: str) -> None:
        try:
            await self.store.delete(key)
        except STORE_ERRORS as exc:
            await self._failed("delete", exc).delete(key)
            return
        self.outage.ok()

    async def close(self) -> None:
        """The owner (StateSeam) closes the real store; a view has nothing of its own to close."""


@dataclass
class StateSeam:
    """The server's one store and its two views: ``engine`` (continue locally) and ``strict`` (raise)."""

    store: StateStore
    shared: bool  # whether other processes see it too (then DNS answers are worth writing through)
    outage: Outage = field(default_factory=lambda: Outage("state store", log))
    engine: GuardedStore = field(init=False)
    strict: GuardedStore = field(init=False)  # for filters (FilterEnv.state) and the session counter

    def __post_init__(self) -> None:
        self.engine = GuardedStore(self.store, self.outage, "continue")
        self.strict = GuardedStore(self.store, self.outage, "raise")

    async def close(self) -> None:
        await self.store.close()


def make_state(cfg: State) -> StateSeam:
    """The store ``[state] backend`` names: this process's memory, or Redis shared by instances."""
    if cfg.backend == "redis" and cfg.url is not None:
        from spamgate.proxy.state_redis import RedisStore

        return StateSeam(RedisStore(cfg.url, cfg.key_prefix, cfg.timeout), shared=True)
    return StateSeam(MemoryStore(), shared=False)
