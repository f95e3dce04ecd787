"""The client's reverse DNS name, forward-confirmed (FCrDNS), as Postfix itself would find it.

spamgate looks it up so that Postfix behind it (through XCLIENT NAME/REVERSE_NAME), our
Received header and the filters see the real client's names, not localhost's. Lookups go
through the shared caching resolver (so a client that reconnects costs nothing, and
failures are counted and logged once per outage) and are bounded by their own small
budget: a greeting is never held for seconds by a slow resolver.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

import dns.reversename

from spamgate.filters.sdk.options import client_address
from spamgate.filters.services.dns import CachingResolver

__all__ = ["ClientNames", "ReverseResolver"]


@dataclass(frozen=True)
class ClientNames:
    reverse: str | None = None  # the PTR name, whatever it is
    verified: str | None = None  # the PTR name when it resolves back to the client's address
    temporary_failure: bool = False


@functools.lru_cache(maxsize=4096)
def _ptr_name(ip: str) -> str:
    # dnspython builds the name label by label (~40 us); clients come back and their names stay.
    return str(dns.reversename.from_address(ip).to_text())


class ReverseResolver:
    def __init__(self, resolver: CachingResolver, budget: float) -> None:
        self.resolver = resolver
        self.budget = budget

    async def lookup(self, ip: str) -> ClientNames:
        addr = client_address(ip)  # IPv4-mapped IPv6 as IPv4: its PTR is under in-addr.arpa, its records A
        if addr is None:
            return ClientNames()
        ptr = await self.resolver.query(_ptr_name(str(addr)), "PTR")
        if ptr.status in ("nxdomain", "nodata"):
            return ClientNames()
        if not ptr.found:
            return ClientNames(temporary_failure=True)
        name = ptr.records[0]
        forward = await self.resolver.query(name, "AAAA" if addr.version == 6 else "A")
        if forward.status in ("nxdomain", "nodata"):
            return ClientNames(reverse=name)
        if forward.status != "ok":
            return ClientNames(reverse=name, temporary_failure=True)
        confirmed = any(client_address(r) == addr for r in forward.records)
        return ClientNames(reverse=name, verified=name if confirmed else None)

    async def lookup_bounded(self, ip: str) -> ClientNames:
        """The lookup within the budget; what is still in flight then finishes into the cache."""
        try:
            # In the session's task (asyncio.timeout), not a task of its own per connection (wait_for).
            async with asyncio.timeout(self.budget):
                return await self.lookup(ip)
        except TimeoutError:
            return ClientNames(temporary_failure=True)
