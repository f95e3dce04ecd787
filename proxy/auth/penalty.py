"""The brute-force penalty box: too many failed logins from one client, and it waits.

Failures are counted per client in a sliding window; the ``max_failures``-th failure
within ``window`` seconds boxes the client for ``penalty`` seconds. IPv6 clients are
counted per /64, since one host usually owns the whole prefix. Memory is bounded: at
most ``max_entries`` clients are remembered, least recently seen evicted first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["PenaltyBox", "client_key"]


def client_key(ip: str) -> str:
    """What failures are counted against: the IPv4 address, or the IPv6 /64."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


class PenaltyBox:
    def __init__(
        self,
        max_failures: int,
        window: float,
        penalty: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self.max_entries = max_entries
        self.reconfigure(max_failures, window, penalty)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def reconfigure(self, max_failures: int, window: float, penalty: float) -> None:
        """New limits (a reload) for the clients already counted: nobody boxed is let out early."""
        if max_failures < 1 or window <= 0 or penalty < 0 or self.max_entries < 1:
            raise ValueError("PenaltyBox needs max_failures >= 1, window > 0, penalty >= 0, max_entries >= 1")
        self.max_failures = max_failures
        self.window = window
        self.penalty = penalty

    def __len__(self) -> int:
        return len(self._entries)

    def is_blocked(self, ip: str) -> bool:
        key = client_key(ip)
        entry = self._entries.get(key)
        if entry is None:
            return False
        now = self._clock()
        if entry.blocked_until > now:
            return True
        self._prune(entry, now)
        if not entry.failures:
            del self._entries[key]
        return False

    def record_failure(self, ip: str) -> bool:
        """Count a failed login; True when this very failure put the client in the box."""
        key = client_key(ip)
        now = self._clock()
        entry = self._entries.pop(key, None) or _Entry()
        self._entries[key] = entry
        self._evict()
        if entry.blocked_until > now:
            return False
        self._prune(entry, now)
        entry.failures.append(now)
        if len(entry.failures) < self.max_failures:
            return False
        entry.failures.clear()
        entry.blocked_until = now + self.penalty
        return True

    def record_success(self, ip: str) -> None:
        """A good login forgets earlier failures (but does not lift a running penalty)."""
        key = client_key(ip)
        entry = self._entries.get(key)
        if entry is not None and entry.blocked_until <= self._clock():
            del self._entries[key]

    def _prune(self, entry: _Entry, now: float) -> None:
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
