"""Everything a session needs from one config generation, swapped atomically on reload."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Protocol

from spamgate.filters.sdk.outage import Outage
from spamgate.filters.sdk.runner import Pipeline
from spamgate.filters.sdk.scoring import Thresholds
from spamgate.filters.sdk.state import StateError, StateStore
from spamgate.proxy.backend import BackendProtocol
from spamgate.proxy.config import Config, Listener
from spamgate.proxy.quarantine import Quarantine
from spamgate.proxy.rdns import ReverseResolver

__all__ = ["Authenticator", "Penalties", "Runtime", "SessionCounter"]


class Authenticator(Protocol):
    async def authenticate(self, username: str, password: str, *, client_ip: str) -> bool: ...
    async def close(self) -> None: ...


class Penalties(Protocol):
    def reconfigure(self, max_failures: int, window: float, penalty: float) -> None: ...
    async def is_blocked(self, ip: str) -> bool: ...
    async def record_failure(self, ip: str) -> bool: ...
    async def record_success(self, ip: str) -> None: ...


# A crashed instance never counts its sessions down in a shared store: its counts fade after this long.
SESSION_KEY_TTL = 3600.0


@dataclass
class SessionCounter:
    """Open sessions (shared by every generation): in this process in total and per client IP,
    always exact, and per IP in the server's store (across instances, when it is shared).

    ``store`` raises StateError when it can't answer (after counting and logging it); then the
    local count decides, so a store outage never blocks a connection.
    """

    store: StateStore | None = None
    total: int = 0
    per_ip: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, ip: str) -> None:
        self.total += 1
        self.per_ip[ip] += 1

    def remove(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]

    async def open(self, ip: str) -> tuple[int, bool]:
        """Count a new session from ``ip``: (sessions from it now, this one included; counted in the store)."""
        self.add(ip)
        if self.store is None:
            return self.per_ip[ip], False
        try:
            shared = await self.store.incr(f"sessions:{ip}", SESSION_KEY_TTL)
        except StateError:
            return self.per_ip[ip], False
        # Never below our own count: a store entry may have expired under long sessions.
        return max(shared, self.per_ip[ip]), True

    async def release(self, ip: str) -> None:
        """The store's side of the end of a session ``open`` counted there (``remove`` does this process's)."""
        assert self.store is not None
        key = f"sessions:{ip}"
        try:
            if await self.store.incr(key, SESSION_KEY_TTL, -1) <= 0:
                # Keeps the store small; on a shared store a racing open may lose one count (looser, never stricter).
                await self.store.delete(key)
        except StateError:
            pass  # counted and logged by the store; the entry expires with its TTL


@dataclass
class Runtime:
    cfg: Config
    pipeline: Pipeline
    backend: BackendProtocol
    counter: SessionCounter
    quarantine: Quarantine | None = None
    authenticator: Authenticator | None = None
    penalties: Penalties | None = None
    rdns: ReverseResolver | None = None
    shutting_down: bool = False
    auth_outage: Outage = field(default_factory=lambda: Outage("auth backend", logging.getLogger("spamgate.auth")))

    @property
    def thresholds(self) -> Thresholds:
        return self.cfg.actions

    def listener(self, label: str) -> Listener:
        for lst in self.cfg.listen:
            if lst.label == label:
                return lst
        raise KeyError(label)
