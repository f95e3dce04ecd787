"""The DNS view of sender authentication: A, AAAA, TXT and PTR through the shared resolver, MX beside it.

A, AAAA, TXT and PTR go through the engine's shared resolver (``FilterEnv.resolver``) so
SPF, DKIM and DMARC share the RBL filter's cache and metrics. That resolver does not know MX (SPF's ``mx``
mechanism needs it), so MX goes through a resolver built from the same ``[dns]``
settings by ``filters.dns.make_resolver``, with dnspython's own TTL cache.
"""

from __future__ import annotations

from typing import Literal

import dns.exception
import dns.name
import dns.resolver

from spamgate.filters.sdk.dns import Resolver
from spamgate.filters.sdk.errors import DependencyError
from spamgate.filters.services.dns import make_resolver

__all__ = ["AuthDns", "DnsTempError", "Record"]

QType = Literal["A", "AAAA", "TXT", "MX", "PTR"]
Record = str | tuple[int, str]


class DnsTempError(DependencyError):
    """The answer is unknown (timeout, SERVFAIL, REFUSED): a temperror, never a 'no'."""


class AuthDns:
    def __init__(self, shared: Resolver) -> None:
        self.settings = settings = shared.settings
        self.shared = shared
        r = make_resolver(settings)
        r.cache = dns.resolver.LRUCache(max(1, settings.cache_size))
        self._other = r

    @property
    def lifetime(self) -> float:
        return self.settings.timeout * self.settings.attempts

    async def query(self, name: str, qtype: QType) -> list[Record]:
        """Records of ``qtype`` at ``name``: [] when there are none, DnsTempError when unknown.

        MX records come as (preference, exchange); PTR as names without the final dot.
        """
        if qtype in ("A", "AAAA", "TXT", "PTR"):
            answer = await self.shared.query(name, qtype)
            if answer.status in ("nxdomain", "nodata"):
                return []
            if answer.status != "ok":
                raise DnsTempError(f"{qtype} {name}: {answer.status} {answer.detail}".strip())
            return list(answer.records)
        try:
            ans = await self._other.resolve(dns.name.from_text(name), qtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTempError(f"{qtype} {name}: {type(exc).__name__}") from None
        if ans.rrset is None:
            return []
        return [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in ans.rrset]

    async def txt(self, name: str) -> list[str]:
        return [str(r) for r in await self.query(name, "TXT")]
