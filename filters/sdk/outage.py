"""A dependency's health as log lines: one when it goes down, a reminder while down, one on recovery.

An unreachable spamd (or DNS server, or backend) is one fact, however many messages
run into it. Logging it per message floods the journal at exactly the moment an admin
needs to read it, so every component that talks to a dependency reports through one
of these instead: ``failed()`` on each failure, ``ok()`` on each success.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from spamgate.filters.sdk.errors import DependencyError

__all__ = ["DependencyError", "Outage"]


class Outage:
    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        remind_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = logger
        self.remind_every = remind_every
        self._clock = clock
        self.down_since: float | None = None
        self._wall_since = 0.0
        self._last_line = 0.0
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, detail: str, exc: BaseException | None = None) -> None:
        """Record a failure; logs only when the outage starts or a reminder is due.

        ``exc`` is attached (as a traceback) only to the first line, and only at debug
        level unless it is not a known dependency failure.
        """
        now = self._clock()
        self.failures += 1
        if self.down_since is None:
            self.down_since = self._last_line = now
            self._wall_since = time.time()
            self.failures = 1
            tb = exc is not None and (self.log.isEnabledFor(logging.DEBUG) or not _expected(exc))
            self.log.warning("dependency=%s state=down error=%s", self.what, detail, exc_info=exc if tb else None)
            return
        if now - self._last_line >= self.remind_every:
            self._last_line = now
            self.log.warning(
                "dependency=%s state=still-down since=%s failures=%d error=%s",
                self.what, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._wall_since)), self.failures, detail,
            )

    def ok(self) -> None:
        if self.down_since is None:
            return
        self.log.info("dependency=%s state=recovered after=%.1fs failures=%d", self.what,
                      self._clock() - self.down_since, self.failures)
        self.down_since = None
        self.failures = 0


def _expected(exc: BaseException) -> bool:
    return isinstance(exc, DependencyError | TimeoutError | OSError)
