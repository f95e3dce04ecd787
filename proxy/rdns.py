"""The client's reverse DNS name, forward-confirmed (FCrDNS), as Postfix itself would find it.

spamgate looks it up so that Postfix behind it (through XCLIENT NAME/REVERSE_NAME), our
Received header and the filters see the real client's names, not localhost's. Lookups go
to the ``[dns]`` resolver and never block the event loop; a failure just means unknown.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from filters.api import DnsSettings

__all__ = ["ClientNames", "ReverseResolver"]

log = logging.getLogger("spamgate.rdns")


@dataclass(frozen=True)
class ClientNames:
    reverse: str | None = None  # the PTR name, whatever it is
    verified: str | None = None  # the PTR name when it resolves back to the client's address
    temporary_failure: bool = False


class ReverseResolver:
    def __init__(self, settings: DnsSettings) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=False)
        self.resolver.nameservers = list(settings.nameservers)
        self.resolver.port = settings.port
        self.resolver.timeout = settings.timeout
        self.resolver.lifetime = settings.timeout * settings.attempts

    async def lookup(self, ip: str) -> ClientNames:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return ClientNames()
        try:
            answer = await self.resolver.resolve(dns.reversename.from_address(ip), "PTR")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return ClientNames()
        except (dns.exception.DNSException, OSError) as exc:
            log.debug("reverse lookup of %s failed: %r", ip, exc)
            return ClientNames(temporary_failure=True)
        name = str(answer[0].target).rstrip(".").lower()
        if not name:
            return ClientNames()
        rdtype = "AAAA" if addr.version == 6 else "A"
        try:
            forward = await self.resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return ClientNames(reverse=name)
        except (dns.exception.DNSException, OSError):
            return ClientNames(reverse=name, temporary_failure=True)
        confirmed = any(ipaddress.ip_address(r.to_text()) == addr for r in forward)
        return ClientNames(reverse=name, verified=name if confirmed else None)

    async def lookup_bounded(self, ip: str, limit: float) -> ClientNames:
        try:
            return await asyncio.wait_for(self.lookup(ip), limit)
        except TimeoutError:
            return ClientNames(temporary_failure=True)
