"""The resolver's cache: TTLs, size bound, negative TTL from the SOA."""

from __future__ import annotations

import dns.message
import dns.rrset

from spamgate.filters.sdk.api import DnsSettings
from spamgate.filters.sdk.testing import FakeClock
from spamgate.filters.services.dns import MAX_TTL, DnsAnswer, TtlCache, shared_resolver
from spamgate.filters.services.dns_answer import DEFAULT_NEGATIVE_TTL, negative_ttl


def test_entries_expire_with_their_ttl() -> None:
    clock = FakeClock()
    cache = TtlCache(10, clock)
    cache.put(("a.test", "A"), DnsAnswer("ok", ("127.0.0.2",), ttl=30))
    cache.put(("b.test", "A"), DnsAnswer("nxdomain", ttl=5))
    clock.now += 4.9
    assert cache.get(("b.test", "A")) == DnsAnswer("nxdomain", ttl=5)
    clock.now += 0.2
    assert cache.get(("b.test", "A")) is None
    assert cache.get(("a.test", "A")) is not None
    clock.now += 30
    assert cache.get(("a.test", "A")) is None
    assert len(cache) == 0


def test_ttl_is_capped() -> None:
    clock = FakeClock()
    cache = TtlCache(10, clock)
    cache.put(("a.test", "A"), DnsAnswer("ok", ("127.0.0.2",), ttl=86400 * 7))
    clock.now += MAX_TTL + 1
    assert cache.get(("a.test", "A")) is None


def test_size_bound_evicts_least_recently_used() -> None:
    cache = TtlCache(2, FakeClock())
    for name in ("a", "b"):
        cache.put((name, "A"), DnsAnswer("ok", ("127.0.0.2",), ttl=60))
    assert cache.get(("a", "A")) is not None  # a is now the most recent
    cache.put(("c", "A"), DnsAnswer("ok", ("127.0.0.2",), ttl=60))
    assert len(cache) == 2
    assert cache.get(("b", "A")) is None
    assert cache.get(("a", "A")) is not None


def test_zero_size_or_zero_ttl_caches_nothing() -> None:
    off = TtlCache(0, FakeClock())
    off.put(("a", "A"), DnsAnswer("ok", ("127.0.0.2",), ttl=60))
    assert off.get(("a", "A")) is None
    on = TtlCache(5, FakeClock())
    on.put(("a", "A"), DnsAnswer("ok", ("127.0.0.2",), ttl=0))
    assert len(on) == 0


def test_negative_ttl_is_min_of_soa_ttl_and_minimum() -> None:
    msg = dns.message.make_response(dns.message.make_query("x.zen.test.", "A"))
    msg.authority.append(
        dns.rrset.from_text("zen.test.", 300, "IN", "SOA", "ns.zen.test. h.zen.test. 1 3600 600 86400 42")
    )
    assert negative_ttl(msg) == 42
    msg.authority[0].ttl = 10
    assert negative_ttl(msg) == 10
    assert negative_ttl(None) == DEFAULT_NEGATIVE_TTL
    bare = dns.message.make_response(dns.message.make_query("x.zen.test.", "A"))
    assert negative_ttl(bare) == DEFAULT_NEGATIVE_TTL


def test_one_resolver_per_settings() -> None:
    a = DnsSettings(nameservers=("127.0.0.1",), port=5300)
    assert shared_resolver(a) is shared_resolver(DnsSettings(nameservers=("127.0.0.1",), port=5300))
    assert shared_resolver(a) is not shared_resolver(DnsSettings(nameservers=("127.0.0.1",), port=5301))
    assert shared_resolver(a).cache.max_entries == a.cache_size
