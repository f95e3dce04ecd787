"""Shared state: the seam that lets several spamgate instances count together.

Rate limits, greylisting, the brute-force penalty box and session counts need counters
and flags that expire. :class:`StateStore` is the whole contract (a few atomic, async
operations); :class:`MemoryStore` is the embedded default (one process, nothing to
run); a Redis implementation plugs into the same seam for several instances.

A store that cannot answer raises :class:`StateError` (a ``DependencyError``); each
caller decides what that means (its ``on_state_error``: continue or tempfail).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from spamgate.filters.sdk.errors import DependencyError

__all__ = ["MemoryStore", "StateError", "StateStore"]


class StateError(DependencyError):
    """The state store could not be asked (Redis down, timed out)."""


@runtime_checkable
class StateStore(Protocol):
    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Add ``amount`` and return the new value; a new key starts at 0 and expires after ``ttl`` s."""
        ...

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        """Set ``key`` (expiring after ``ttl`` s) only if it does not exist; True if it was set."""
        ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...

    async def get(self, key: str) -> str | None: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """The in-process store: a dict with expiry times, bounded in size (oldest entries go first)."""

    def __init__(self, max_entries: int = 1_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._data: dict[str, tuple[float, str]] = {}

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str) -> tuple[float, str] | None:
        item = self._data.get(key)
        if item is not None and item[0] <= self._clock():
            del self._data[key]
            return None
        return item

    def _put(self, key: str, expires: float, value: str) -> None:
        self._data[key] = (expires, value)
        if len(self._data) > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        now = self._clock()
        for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
            del self._data[k]
        while len(self._data) > self.max_entries:
            del self._data[next(iter(self._data))]  # dicts keep insertion order: the oldest

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        item = self._live(key)
        if item is None:
            self._put(key, self._clock() + ttl, str(amount))
            return amount
        value = int(item[1]) + amount
        self._data[key] = (item[0], str(value))
        return value

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        self._put(key, self._clock() + ttl, value)
        return True

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._data.pop(key, None)
        self._put(key, self._clock() + ttl, value)

    async def get(self, key: str) -> str | None:
        item = self._live(key)
        return None if item is None else item[1]

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def close(self) -> None:
        self._data.clear()
