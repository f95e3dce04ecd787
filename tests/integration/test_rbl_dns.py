"""The DNS plumbing and the rbl filter against a real NSD serving test zones.

These call the filter directly (no SMTP); test_rbl.py shows the same cases through
real SMTP sessions to spamgate in front of Postfix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from spamgate.filters.rbl.filter import RblFilter
from spamgate.filters.sdk.api import Decision, DnsSettings, FilterEnv, Phase
from spamgate.filters.sdk.testing import make_context
from spamgate.filters.services.dns import CachingResolver
from spamgate.proxy.filter_metrics import FILTER_METRICS
from tests.integration.rbl_zones import IPV6_LISTED, NEGATIVE_TTL, TXT_127_0_0_2, ZONES
from tests.integration.services.dns import DnsServer, silent_udp_port, start_dns

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = start_dns(ZONES, tmp_path_factory.mktemp("nsd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    with silent_udp_port() as port:
        yield port


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def resolver(nsd: DnsServer, **kw: Any) -> CachingResolver:
    """A private resolver (not the shared registry) so each test starts with an empty cache."""
    settings = DnsSettings(nameservers=(nsd.host,), port=nsd.port, **{"timeout": 2.0, "attempts": 1, **kw})
    return CachingResolver(settings, FILTER_METRICS)  # the engine's metrics handle, on the default registry


async def test_answers_nxdomain_and_negative_ttl_from_the_soa(nsd: DnsServer) -> None:
    r = resolver(nsd)
    listed = await r.query("2.0.0.127.zen.test", "A")
    assert (listed.status, listed.records, listed.ttl) == ("ok", ("127.0.0.2",), 60)
    txt = await r.query("2.0.0.127.zen.test", "TXT")
    assert txt.records == (TXT_127_0_0_2,)
    clean = await r.query("3.0.0.127.zen.test", "A")
    assert (clean.status, clean.ttl) == ("nxdomain", NEGATIVE_TTL)
    nodata = await r.query("2.0.0.127.zen.test", "AAAA")
    assert (nodata.status, nodata.ttl) == ("nodata", NEGATIVE_TTL)
    refused = await r.query("anything.not-served.test", "A")
    assert refused.status == "error" and "REFUSED" in refused.detail
    bad = await r.query("x" * 64 + ".zen.test", "A")
    assert bad.status == "error" and bad.detail.startswith("bad name")


async def test_cache_hits_do_not_query_again(nsd: DnsServer) -> None:
    r = resolver(nsd)
    await r.query("3.0.0.127.zen.test")
    sent, hits = sample("spamgate_dns_queries_total", {"rdtype": "A", "result": "nxdomain"}), sample(
        "spamgate_dns_cache_hits_total"
    )
    again = await r.query("3.0.0.127.ZEN.test.")
    assert again.status == "nxdomain"
    assert sample("spamgate_dns_queries_total", {"rdtype": "A", "result": "nxdomain"}) == sent
    assert sample("spamgate_dns_cache_hits_total") == hits + 1


async def test_a_burst_from_one_ip_costs_one_lookup(nsd: DnsServer) -> None:
    r = resolver(nsd)
    before = sample("spamgate_dns_queries_total", {"rdtype": "A", "result": "ok"})
    seen = sample("spamgate_dns_lookup_duration_seconds_count", {"rdtype": "A"})
    answers = await asyncio.gather(*(r.query("2.0.0.127.zen.test") for _ in range(50)))
    assert {a.records for a in answers} == {("127.0.0.2",)}
    assert sample("spamgate_dns_queries_total", {"rdtype": "A", "result": "ok"}) == before + 1
    assert sample("spamgate_dns_lookup_duration_seconds_count", {"rdtype": "A"}) == seen + 1


async def test_a_server_that_never_answers_times_out(silent_port: int) -> None:
    r = CachingResolver(DnsSettings(nameservers=("127.0.0.1",), port=silent_port, timeout=0.2, attempts=2))
    answer = await r.query("2.0.0.127.zen.test")
    assert answer.status == "timeout"
    short = await CachingResolver(DnsSettings(nameservers=("127.0.0.1",), port=silent_port, timeout=5.0)).query(
        "2.0.0.127.zen.test", max_wait=0.2
    )
    assert (short.status, short.detail) == ("timeout", "no answer within 0.2s")
    assert len(r.cache) == 0  # a timeout is never cached


def rbl(nsd: DnsServer, silent_port: int, **options: Any) -> RblFilter:
    lists = [
        {"zone": "zen.test", "weight": 1.0, "codes": {"127.0.0.4..127.0.0.7": "RBL_ZEN_XBL"}},
        {"zone": "dnswl.test", "weight": -5.0, "symbol": "RCVD_IN_DNSWL"},
        {"zone": "dbl.test", "kind": "domain", "weight": 2.0},
        {"zone": "uribl.test", "kind": "uri", "weight": 3.0, "answers": "&0x02"},
        {"zone": "slow.test", "weight": 1.0, "timeout": 0.3, "nameservers": ["127.0.0.1"], "port": silent_port},
    ]
    # As the engine builds it: its metrics handle and a resolver for [dns] (private here: a fresh cache).
    dns = DnsSettings(nameservers=(nsd.host,), port=nsd.port, timeout=2.0, attempts=1)
    env = FilterEnv(dns=dns, metrics=FILTER_METRICS, resolver=CachingResolver(dns, FILTER_METRICS))
    return RblFilter("rbl", {"lists": lists, "skip_private": False, **options}, env)


async def connect_symbols(flt: RblFilter, ip: str) -> dict[str, float]:
    v = await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip=ip))
    return {s.name: s.score for s in v.symbols}


async def test_client_ip_cases(nsd: DnsServer, silent_port: int) -> None:
    flt = rbl(nsd, silent_port)
    timeout = {"RBL_SLOW_TEST_TIMEOUT": 0.0}  # the zone that never answers, every time
    assert await connect_symbols(flt, "127.0.0.2") == {"RBL_ZEN_TEST": 1.0, **timeout}
    assert await connect_symbols(flt, "127.0.0.3") == timeout
    assert await connect_symbols(flt, "127.0.0.4") == {"RBL_ZEN_XBL": 1.0, **timeout}
    assert await connect_symbols(flt, "127.0.0.5") == {"RBL_ZEN_TEST_ERROR": 0.0, **timeout}
    assert await connect_symbols(flt, "127.0.0.6") == {"RBL_ZEN_TEST": 1.0, "RCVD_IN_DNSWL": -5.0, **timeout}
    assert await connect_symbols(flt, IPV6_LISTED) == {"RBL_ZEN_TEST": 1.0, **timeout}
    assert await connect_symbols(flt, "2001:db8::26") == timeout


async def test_lookups_are_counted_by_list_and_result(nsd: DnsServer, silent_port: int) -> None:
    flt = rbl(nsd, silent_port)
    keys = [("zen.test", "listed"), ("zen.test", "error"), ("dnswl.test", "not_listed"), ("slow.test", "timeout")]
    before = {k: sample("spamgate_dnsbl_lookups_total", {"list": k[0], "result": k[1]}) for k in keys}
    await connect_symbols(flt, "127.0.0.2")
    await connect_symbols(flt, "127.0.0.5")
    after = {k: sample("spamgate_dnsbl_lookups_total", {"list": k[0], "result": k[1]}) for k in keys}
    assert {k: after[k] - before[k] for k in keys} == {
        ("zen.test", "listed"): 1,
        ("zen.test", "error"): 1,
        ("dnswl.test", "not_listed"): 2,
        ("slow.test", "timeout"): 2,
    }


async def test_rcpt_reject_text_carries_the_txt_record(nsd: DnsServer, silent_port: int) -> None:
    flt = rbl(nsd, silent_port, reject_score=1.0)
    listed = await flt.check(Phase.RCPT, make_context(Phase.RCPT, peer_ip="127.0.0.2", helo="client.test"))
    assert listed.decision is Decision.REJECT
    assert str(listed.reply) == (
        f"554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using zen.test; {TXT_127_0_0_2}"
    )
    for ip in ("127.0.0.3", "127.0.0.5", "127.0.0.6"):  # clean, error code, allowlisted
        v = await flt.check(Phase.RCPT, make_context(Phase.RCPT, peer_ip=ip, helo="client.test"))
        assert v.decision is Decision.CONTINUE, ip


async def test_rhsbl_helo_and_sender(nsd: DnsServer, silent_port: int) -> None:
    flt = rbl(nsd, silent_port, reject_score=2.0)
    helo = await flt.check(Phase.HELO, make_context(Phase.HELO, helo="spam-helo.example"))
    assert [(s.name, s.score) for s in helo.symbols] == [("RHSBL_DBL_TEST", 2.0)]
    ctx = make_context(Phase.RCPT, peer_ip="127.0.0.3", helo="client.test", mail_from="a@spammer.example")
    mail = await flt.check(Phase.MAIL, ctx)
    assert [s.name for s in mail.symbols] == ["RHSBL_DBL_TEST"]
    v = await flt.check(Phase.RCPT, ctx)
    assert str(v.reply) == (
        "554 5.7.1 Service unavailable; Sender address [spammer.example] blocked using dbl.test; "
        "spammer.example is a spam domain"
    )


async def test_uribl_on_body_urls(nsd: DnsServer, silent_port: int) -> None:
    flt = rbl(nsd, silent_port)
    msg = "Subject: deal\n\nclick http://www.spam-url.example/buy or http://bitonly.example/ or http://ok.example/\n"
    v = await flt.check(Phase.DATA, make_context(Phase.DATA, message=msg))
    assert [(s.name, s.score, s.detail) for s in v.symbols] == [("URIBL_URIBL_TEST", 3.0, "spam-url.example 127.0.0.2")]
