"""One log line per outage of an external service, not one per message.

The first failure logs "down", later failures only a rate-limited reminder (with the
count so far), and the first success after an outage logs "up again" with its length.
The state is also a gauge, so an alert can fire on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["OutageTracker"]


class OutageTracker:
    def __init__(
        self,
        what: str,
        log: logging.Logger,
        reminder_seconds: float = 300.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = log
        self.reminder_seconds = reminder_seconds
        self.on_change = on_change
        self.clock = clock
        self.up: bool | None = None  # unknown until the first answer or failure
        self.down_since = 0.0
        self.failures = 0
        self._last_log = 0.0

    def _set(self, up: bool) -> None:
        self.up = up
        if self.on_change is not None:
            self.on_change(up)

    def failure(self, error: str) -> None:
        now = self.clock()
        if self.up is not False:
            self.down_since = self._last_log = now
            self.failures = 1
            self.log.error("%s state=down error=%s", self.what, error)
            self._set(False)
            return
        self.failures += 1
        if now - self._last_log >= self.reminder_seconds:
            self._last_log = now
            self.log.error(
                "%s state=still-down for=%.0fs failures=%d error=%s",
                self.what, now - self.down_since, self.failures, error,
            )

    def success(self) -> None:
        if self.up is True:
            return
        if self.up is False:
            self.log.warning(
                "%s state=up after=%.1fs failures=%d", self.what, self.clock() - self.down_since, self.failures
            )
        self._set(True)
