"""SPF (RFC 7208) with pyspf, its DNS answered by our asyncio resolver.

Why pyspf: it is the reference implementation behind pypolicyd-spf / spf-engine and
passes the RFC 7208 test suite (macros, void-lookup and 10-lookup limits, redirect,
exp); spf-engine is a Postfix policy daemon built on it, and authheaders only wraps
it. Re-implementing SPF over our resolver would re-open every edge case pyspf closed.

pyspf is synchronous and looks names up through the module-level ``spf.DNSLookup``.
We run each check in a worker thread and point that hook, per check, at a bridge
that submits the query to the event loop's shared resolver and waits for it: the
thread blocks, the loop never does, and every lookup goes to the ``[dns]`` servers
through the same cache as the other filters. The bridge travels in a ContextVar set
inside a copied context per check, so concurrent checks each see their own loop
and resolver.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import spf

from spamgate.filters.services.auth_dns import AuthDns, DnsTempError

__all__ = ["SpfResult", "check_spf"]

SpfStatus = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
Lookup = Callable[[str, str, float], list[tuple[tuple[str, str], Any]]]

_LOOKUP: contextvars.ContextVar[Lookup | None] = contextvars.ContextVar("spamgate_spf_lookup", default=None)
_ORIGINAL_LOOKUP = spf.DNSLookup
_SUPPORTED = frozenset({"A", "AAAA", "TXT", "MX", "PTR"})
# SPF threads mostly wait for DNS answers; their own pool keeps them from starving
# the default executor that DKIM hashing and other filters' to_thread calls share.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="spamgate-spf")
# RFC 7208 section 4.6.4 caps a check at 10 DNS-querying terms, plus the record itself
# and MX/PTR fan-out; pyspf enforces the caps, this only bounds the worker thread.
MAX_LOOKUPS_WAIT = 22


def _dispatch(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[tuple[tuple[str, str], Any]]:
    lookup = _LOOKUP.get()
    if lookup is None:
        return _ORIGINAL_LOOKUP(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    return lookup(name, qtype, timeout)


spf.DNSLookup = _dispatch


@dataclass(frozen=True)
class SpfResult:
    result: SpfStatus
    identity: Literal["mailfrom", "helo"]
    domain: str
    explanation: str = ""


def _bridge(resolver: AuthDns, loop: asyncio.AbstractEventLoop) -> Lookup:
    def lookup(name: str, qtype: str, timeout: float) -> list[tuple[tuple[str, str], Any]]:
        if qtype not in _SUPPORTED:
            return []
        fut = asyncio.run_coroutine_threadsafe(resolver.query(name, qtype), loop)  # type: ignore[arg-type]
        try:
            records = fut.result(resolver.lifetime + 1.0)
        except DnsTempError as exc:
            raise spf.TempError(f"DNS {exc}") from None
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise spf.TempError(f"DNS {qtype} {name}: timeout") from None
        if qtype == "TXT":
            return [((name, qtype), [str(r).encode("utf-8")]) for r in records]
        return [((name, qtype), r) for r in records]

    return lookup


def _run(lookup: Lookup, ip: str, sender: str, helo: str, timeout: float) -> tuple[str, str]:
    _LOOKUP.set(lookup)
    result, _code, explanation = spf.query(i=ip, s=sender, h=helo, timeout=timeout, querytime=timeout).check()
    return str(result), str(explanation)


def _is_domain(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return False
    except ValueError:
        return "." in name


async def check_spf(
    resolver: AuthDns, ip: str, sender: str | None, helo: str | None, identity: Literal["mailfrom", "helo"]
) -> SpfResult:
    """One SPF check: ``mailfrom`` for MAIL FROM (postmaster@HELO for ``<>``), ``helo`` for HELO."""
    helo_name = (helo or "").strip().rstrip(".")
    address = (sender or "").strip().strip("<>") if identity == "mailfrom" else ""
    domain = address.rsplit("@", 1)[1].lower() if "@" in address else helo_name.lower()
    if not domain or not _is_domain(domain):
        return SpfResult("none", identity, domain, "no domain to check")
    budget = resolver.lifetime * MAX_LOOKUPS_WAIT
    lookup = _bridge(resolver, asyncio.get_running_loop())
    call = functools.partial(contextvars.copy_context().run, _run, lookup, ip, address, helo_name, budget)
    result, explanation = await asyncio.get_running_loop().run_in_executor(_POOL, call)
    if result not in ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"):
        result, explanation = "permerror", f"unexpected SPF result {result!r}"
    return SpfResult(result, identity, domain, explanation)  # type: ignore[arg-type]
