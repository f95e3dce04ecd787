"""What every console handler needs, reached through ``request.app[CTX]``.

The console reads the running server's current generation at call time (config,
quarantine, penalty box, filters), so after a SIGHUP reload it shows and uses the new
one, like new SMTP sessions do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web
from multidict import MultiDictProxy

from spamgate.filters.sdk.state import MemoryStore
from spamgate.proxy.auth import PasswordFile, PenaltyBox, make_penalty_box
from spamgate.proxy.config import Config
from spamgate.proxy.console.security import Session, SessionStore
from spamgate.proxy.console.status import RateSampler
from spamgate.proxy.http import HealthServer
from spamgate.proxy.quarantine import Quarantine
from spamgate.proxy.release_tokens import LinkKey
from spamgate.proxy.runtime import Penalties, Runtime

__all__ = ["CTX", "FORM", "SESSION", "ConsoleContext", "ConsoleHost", "session_of"]


class ConsoleHost(Protocol):
    """The parts of proxy.server.Server the console looks at."""

    cfg: Config
    runtime: Runtime
    health: HealthServer | None


@dataclass
class ConsoleContext:
    host: ConsoleHost
    admins: PasswordFile
    sessions: SessionStore
    sampler: RateSampler
    tls: bool
    _own_penalties: PenaltyBox | None = None
    _link_key: LinkKey | None = field(default=None, repr=False)

    @property
    def cfg(self) -> Config:
        return self.host.cfg

    @property
    def store(self) -> Quarantine:
        q = self.host.runtime.quarantine
        if q is None:
            raise web.HTTPServiceUnavailable(text="quarantine is not configured")
        return q

    @property
    def penalties(self) -> Penalties:
        """The SMTP AUTH penalty box: console and SMTP logins count against the same client."""
        if self.host.runtime.penalties is not None:
            return self.host.runtime.penalties
        if self._own_penalties is None:
            self._own_penalties = make_penalty_box(self.cfg.auth, MemoryStore())
        return self._own_penalties

    def link_key(self) -> LinkKey:
        if self._link_key is None:
            self._link_key = LinkKey.load(self.cfg.server.state_dir)
        return self._link_key


CTX = web.AppKey("console", ConsoleContext)
SESSION = web.RequestKey("session", Session)
FORM = web.RequestKey("form", MultiDictProxy)


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)
