"""The brute-force penalty box: too many failed logins from one client, and it waits.

It lives in the server's StateStore, so it survives a reload and, with a shared
store, holds across instances: failures are a counter per client that expires
``window`` seconds after the first of them (incr with a TTL); the ``max_failures``-th
failure sets a block flag that expires after ``penalty`` seconds (set-if-absent with
a TTL, so of two instances seeing the last failure at once only one reports the
boxing). IPv6 clients are counted per /64, since one host usually owns the whole
prefix. The store bounds memory and expires entries; this class keeps nothing.
"""

from __future__ import annotations

import ipaddress

from spamgate.filters.sdk.options import client_address
from spamgate.filters.sdk.state import StateStore

__all__ = ["PenaltyBox", "client_key"]


def client_key(ip: str) -> str:
    """What failures are counted against: the IPv4 address, or the IPv6 /64."""
    addr = client_address(ip)
    if addr is None:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class PenaltyBox:
    def __init__(self, store: StateStore, max_failures: int, window: float, penalty: float) -> None:
        self.store = store
        self.reconfigure(max_failures, window, penalty)

    def reconfigure(self, max_failures: int, window: float, penalty: float) -> None:
        """New limits (a reload) for the clients already counted: nobody boxed is let out early."""
        if max_failures < 1 or window <= 0 or penalty < 0:
            raise ValueError("PenaltyBox needs max_failures >= 1, window > 0, penalty >= 0")
        self.max_failures = max_failures
        self.window = window
        self.penalty = penalty

    @staticmethod
    def _keys(ip: str) -> tuple[str, str]:
        key = client_key(ip)
        return f"auth:failures:{key}", f"auth:blocked:{key}"

    async def is_blocked(self, ip: str) -> bool:
        return await self.store.get(self._keys(ip)[1]) is not None

    async def record_failure(self, ip: str) -> bool:
        """Count a failed login; True when this very failure put the client in the box."""
        failures, blocked = self._keys(ip)
        if await self.store.get(blocked) is not None:
            return False
        if await self.store.incr(failures, self.window) < self.max_failures:
            return False
        await self.store.delete(failures)
        if self.penalty <= 0:
            return True  # boxed for no time: this connection is closed, the next may try again
        return await self.store.set_if_absent(blocked, "1", self.penalty)

    async def record_success(self, ip: str) -> None:
        """A good login forgets earlier failures (but does not lift a running penalty)."""
        failures, blocked = self._keys(ip)
        if await self.store.get(blocked) is None:
            await self.store.delete(failures)
