"""Everything a session needs from one config generation, swapped atomically on reload."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Protocol

from spamgate.filters.sdk.outage import Outage
from spamgate.filters.sdk.runner import Pipeline
from spamgate.filters.sdk.scoring import Thresholds
from spamgate.proxy.config import Config, Listener
from spamgate.proxy.quarantine import Quarantine
from spamgate.proxy.rdns import ReverseResolver
from spamgate.proxy.relay import BackendProtocol

__all__ = ["Authenticator", "Penalties", "Runtime", "SessionCounter"]


class Authenticator(Protocol):
    async def authenticate(self, username: str, password: str, *, client_ip: str) -> bool: ...
    async def close(self) -> None: ...


class Penalties(Protocol):
    def reconfigure(self, max_failures: int, window: float, penalty: float) -> None: ...
    def is_blocked(self, ip: str) -> bool: ...
    def record_failure(self, ip: str) -> bool: ...
    def record_success(self, ip: str) -> None: ...


@dataclass
class SessionCounter:
    """Open sessions in total and per client IP (shared by every generation)."""

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
