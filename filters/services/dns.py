"""One caching asyncio DNS resolver per ``[dns]`` setting, shared by every session.

Why a cache of our own rather than dnspython's: we need negative caching per the
SOA minimum (RFC 2308) with a hard size bound, metrics on hits, and coalescing of
identical in-flight queries, so a burst of connections from one IP costs one
lookup even before the first answer arrives.

With a shared StateStore (several instances), answers are also written to it and read
from it on a local miss: the in-process LRU stays the first level (no round trip for
a hit), the store is the second (one instance's lookup serves the others).

Results are values, never exceptions: a lookup ends as ``ok``, ``nxdomain``,
``nodata``, ``timeout`` or ``error``; callers decide what each means.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import dns.asyncbackend
import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.resolver

from spamgate.filters.sdk.dns import DnsAnswer, DnsSettings, RdType, Status
from spamgate.filters.sdk.metrics import MemoryMetrics, Metrics, MetricSpec
from spamgate.filters.sdk.outage import Outage
from spamgate.filters.sdk.state import StateError, StateStore
from spamgate.filters.services.dns_answer import (
    MAX_CNAME_CHAIN,
    RDTYPES,
    ChainTooLong,
    answer_rrset,
    negative_ttl,
    records,
)
from spamgate.filters.services.dns_udp import DnsFailure, Question, UdpQueries

__all__ = [
    "MAX_TTL", "CachingResolver", "DnsAnswer", "RdType", "Status", "TtlCache", "make_resolver", "probe",
    "shared_resolver",
]
log = logging.getLogger("spamgate.dns")


class _ConnectedUdpBackend(type(dns.asyncbackend.get_backend("asyncio"))):  # type: ignore[misc]
    """dnspython's asyncio backend, with UDP sockets connected to the nameserver.

    On an unconnected socket the ICMP "port unreachable" of a nameserver that isn't
    running is never seen, so every query waits out timeout x attempts (4 s per
    connection with the defaults). Connected, the refusal arrives at once as
    ECONNREFUSED, and dnspython drops that nameserver instead of retrying it.
    """

    def datagram_connection_required(self) -> bool:
        return True


_BACKEND = _ConnectedUdpBackend()


class _FailFastResolver(dns.asyncresolver.Resolver):
    async def resolve(self, *args: Any, **kwargs: Any) -> dns.resolver.Answer:
        kwargs.setdefault("backend", _BACKEND)
        return await super().resolve(*args, **kwargs)


def make_resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver:
    """The one way spamgate builds a dnspython resolver from ``[dns]``: fail-fast, no dnspython cache."""
    r = _FailFastResolver(configure=False)
    r.nameservers = list(settings.nameservers)
    r.port = settings.port
    r.timeout = settings.timeout
    r.lifetime = settings.timeout * settings.attempts
    r.cache = None
    return r


async def probe(settings: DnsSettings, wait: float = 1.0) -> str | None:
    """None when at least one nameserver answers (any rcode); else why none does."""
    query = dns.message.make_query(".", "NS")
    errors = []
    for ns in settings.nameservers:
        try:
            await dns.asyncquery.udp(query, ns, timeout=wait, port=settings.port, backend=_BACKEND)
            return None
        except (dns.exception.DNSException, OSError) as exc:
            errors.append(f"{ns}:{settings.port}: {_first_line(exc)}")
    return "; ".join(errors) or "no nameservers configured"

# Bounds staleness whatever a zone says: a delisted host should not wait a day.
MAX_TTL = 3600

LOOKUP_SECONDS = MetricSpec(
    "histogram",
    "spamgate_dns_lookup_duration_seconds",
    "Time spent on DNS queries that went to the network (cache misses)",
    ("rdtype",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUERIES = MetricSpec(
    "counter", "spamgate_dns_queries_total", "DNS queries sent to the network, by outcome", ("rdtype", "result")
)
CACHE_HITS = MetricSpec(
    "counter", "spamgate_dns_cache_hits_total", "DNS lookups answered from the cache or a query in flight"
)
CACHE_MISSES = MetricSpec("counter", "spamgate_dns_cache_misses_total", "DNS lookups that had to query the network")


class TtlCache:
    """A size-bounded LRU of answers, each kept for its own TTL."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[tuple[str, str], tuple[float, DnsAnswer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: tuple[str, str]) -> DnsAnswer | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, answer = item
        if expires <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return answer

    def put(self, key: tuple[str, str], answer: DnsAnswer) -> None:
        ttl = min(answer.ttl, MAX_TTL)
        if self.max_entries <= 0 or ttl <= 0:
            return
        self._data[key] = (self._clock() + ttl, answer)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


class CachingResolver:
    """Asynchronous lookups through one set of nameservers, with a shared cache."""

    def __init__(self, settings: DnsSettings, metrics: Metrics | None = None, store: StateStore | None = None) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else MemoryMetrics()
        self._hits = CACHE_HITS.counter(self.metrics)
        self._misses = CACHE_MISSES.counter(self.metrics)
        self._queries = QUERIES.counter(self.metrics)
        self._seconds = LOOKUP_SECONDS.histogram(self.metrics)
        self.cache = TtlCache(settings.cache_size)
        self.store = store  # the second level, when several instances share one
        self._udp = UdpQueries(settings.nameservers, settings.port, settings.timeout, settings.attempts)
        where = ",".join(f"{ns}:{settings.port}" for ns in settings.nameservers)
        self.outage = Outage(f"dns {where}", log)
        self._inflight: dict[tuple[str, RdType], asyncio.Task[DnsAnswer]] = {}

    @property
    def lifetime(self) -> float:
        return self.settings.timeout * self.settings.attempts

    def for_servers(self, nameservers: tuple[str, ...], port: int) -> CachingResolver:
        """The shared resolver for other nameservers (a DNS list's own), with these settings otherwise."""
        return shared_resolver(self.settings.model_copy(update={"nameservers": nameservers, "port": port}),
                               self.metrics)

    async def query(self, name: str, rdtype: RdType = "A", max_wait: float | None = None) -> DnsAnswer:
        """Look ``name`` up; waits at most ``max_wait`` seconds (default: timeout x attempts).

        A caller that gives up early does not cancel the query: it completes in
        the background and fills the cache for the next caller.
        """
        key: tuple[str, RdType] = (name.lower().rstrip("."), rdtype)
        cached = self.cache.get(key)
        if cached is not None:
            self._hits.inc()
            return cached
        loop = asyncio.get_running_loop()
        task = self._inflight.get(key)
        if task is None or task.get_loop() is not loop:
            self._misses.inc()
            task = loop.create_task(self._fetch(key))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        else:
            self._hits.inc()
        wait = max_wait if max_wait is not None else self.lifetime
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            return DnsAnswer("timeout", detail=f"no answer within {wait:g}s")

    def _forget(self, key: tuple[str, RdType], task: asyncio.Task[DnsAnswer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _fetch(self, key: tuple[str, RdType]) -> DnsAnswer:
        name, rdtype = key
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            # A name no server could hold (a 64-byte label, "a..b"): nobody is asked.
            return DnsAnswer("error", detail=f"bad name: {_first_line(exc)}")
        if self.store is not None:
            stored = await self._load(key)
            if stored is not None:
                self.cache.put(key, stored)
                return stored
        start = time.perf_counter()
        answer = await self._resolve(qname, rdtype)
        self._seconds.labels(rdtype).observe(time.perf_counter() - start)
        self._queries.labels(rdtype, answer.status).inc()
        if answer.status in ("ok", "nxdomain", "nodata"):
            self.cache.put(key, answer)
            self.outage.ok()
            if self.store is not None:
                await self._save(key, answer)
        elif answer.status == "timeout" or answer.detail.startswith("unreachable"):
            self.outage.failed(answer.detail)
        return answer

    # The store holds the absolute expiry (wall clock), so a reader gets the remaining TTL.
    async def _load(self, key: tuple[str, RdType]) -> DnsAnswer | None:
        assert self.store is not None
        try:
            raw = await self.store.get(f"dns:{key[1]}:{key[0]}")
            if raw is None:
                return None
            item = json.loads(raw)
            ttl = int(item["x"] - time.time())
            return DnsAnswer(item["s"], tuple(item["r"]), ttl) if ttl > 0 else None
        except (StateError, ValueError, KeyError, TypeError):
            return None  # a store that can't answer (or a foreign value) is a miss

    async def _save(self, key: tuple[str, RdType], answer: DnsAnswer) -> None:
        assert self.store is not None
        ttl = min(answer.ttl, MAX_TTL)
        if ttl <= 0:
            return
        value = json.dumps({"s": answer.status, "r": list(answer.records), "x": time.time() + ttl})
        try:
            await self.store.set(f"dns:{key[1]}:{key[0]}", value, ttl)
        except StateError:
            pass  # the answer is in the first level; the others will ask for themselves

    async def _resolve(self, qname: dns.name.Name, rdtype: RdType) -> DnsAnswer:
        question = Question(qname, RDTYPES[rdtype])
        try:
            response = await self._udp.ask(question)
        except DnsFailure as exc:  # a socket that can't be made counts against its nameserver there
            return DnsAnswer("timeout" if exc.kind == "timeout" else "error", detail=exc.detail)
        if response.rcode() == dns.rcode.NXDOMAIN:
            return DnsAnswer("nxdomain", ttl=negative_ttl(response))
        try:
            rrset, ttl = answer_rrset(response, question)
        except ChainTooLong:
            return DnsAnswer("error", detail=f"CNAME chain longer than {MAX_CNAME_CHAIN}")
        if rrset is None:
            return DnsAnswer("nodata", ttl=negative_ttl(response))
        return DnsAnswer("ok", records(rdtype, rrset), ttl=ttl)


def _first_line(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


_SHARED: dict[DnsSettings, CachingResolver] = {}


def shared_resolver(
    settings: DnsSettings, metrics: Metrics | None = None, store: StateStore | None = None
) -> CachingResolver:
    """The process-wide resolver for these settings, so reloads and filters share one cache.

    The engine calls this (and hands the result to filters as ``FilterEnv.resolver``);
    ``metrics`` is used by the resolver created on the first call for these settings, and
    ``store`` (the engine passes a shared one at start-up) becomes its second cache level.
    """
    resolver = _SHARED.get(settings)
    if resolver is None:
        resolver = _SHARED[settings] = CachingResolver(settings, metrics)
    if store is not None:
        resolver.store = store
    return resolver
