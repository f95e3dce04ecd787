"""The rbl filter's decisions, with DNS answers from a table (real DNS: tests/integration)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from spamgate.filters.rbl.filter import RblFilter
from spamgate.filters.sdk.api import Decision, DnsSettings, FilterEnv, Phase, Verdict
from spamgate.filters.sdk.testing import MemoryMetrics, make_context
from spamgate.filters.services.dns import CachingResolver, DnsAnswer, RdType


class TableResolver(CachingResolver):
    """Answers from a dict; anything else is NXDOMAIN. Records every query."""

    def __init__(self, table: dict[tuple[str, str], DnsAnswer]) -> None:
        super().__init__(DnsSettings())
        self.table = table
        self.asked: list[tuple[str, str, float | None]] = []

    async def query(self, name: str, rdtype: RdType = "A", max_wait: float | None = None) -> DnsAnswer:
        self.asked.append((name, rdtype, max_wait))
        return self.table.get((name, rdtype), DnsAnswer("nxdomain", ttl=60))


def A(*addrs: str) -> DnsAnswer:
    return DnsAnswer("ok", addrs, ttl=60)


TABLE = {
    ("1.2.0.192.zen.test", "A"): A("127.0.0.2"),
    ("1.2.0.192.zen.test", "TXT"): DnsAnswer("ok", ("Listed, see https://zen.test/q?192.0.2.1",), 60),
    ("1.2.0.192.wl.test", "A"): A("127.0.10.3"),
    ("7.2.0.192.wl.test", "A"): A("127.0.10.3"),
    ("7.2.0.192.zen.test", "A"): A("127.0.0.4"),
    ("9.2.0.192.zen.test", "A"): A("127.255.255.254"),
    ("9.2.0.192.zen.test", "TXT"): DnsAnswer("ok", ("bogus",), 60),
    ("11.2.0.192.zen.test", "A"): DnsAnswer("timeout", detail="no answer within 0.5s"),
    ("spam-helo.example.dbl.test", "A"): A("127.0.1.2"),
    ("spammer.example.dbl.test", "A"): A("127.0.1.2"),
    ("spammer.example.dbl.test", "TXT"): DnsAnswer("ok", ("DBL listed\r\nsecond line",), 60),
    ("spam-url.example.uribl.test", "A"): A("127.0.0.8"),
    ("phish.example.uribl.test", "A"): A("127.0.0.2"),
    ("5.2.0.192.uribl.test", "A"): A("127.0.0.2"),
}

LISTS: list[dict[str, Any]] = [
    {"zone": "zen.test", "weight": 1.0, "timeout": 0.5, "codes": {"127.0.0.4..127.0.0.7": "RBL_ZEN_XBL"}},
    {"zone": "wl.test", "weight": -5.0, "symbol": "RCVD_IN_WL"},
    {"zone": "dbl.test", "kind": "domain", "weight": 2.0, "answers": "127.0.1.2..127.0.1.99"},
    {"zone": "uribl.test", "kind": "uri", "weight": 3.0, "answers": "&0x02"},
]


def make(table: dict[tuple[str, str], DnsAnswer] | None = None, **options: Any) -> tuple[RblFilter, TableResolver]:
    opts: dict[str, Any] = {"lists": LISTS, "skip_private": False, **options}
    flt = RblFilter("rbl", opts, FilterEnv())
    resolver = TableResolver(TABLE if table is None else table)
    flt._resolvers = dict.fromkeys(flt._resolvers, resolver)
    return flt, resolver


def lookups(flt: RblFilter, name: str, result: str) -> float:
    metrics = flt.env.metrics
    assert isinstance(metrics, MemoryMetrics)  # a bare FilterEnv records in memory
    return metrics.value("spamgate_dnsbl_lookups_total", name, result)


def names(v: Verdict) -> dict[str, float]:
    return {s.name: s.score for s in v.symbols}


def test_phases_and_symbols_follow_the_config() -> None:
    flt, _ = make(reject_score=1.0)
    assert flt.phases == {Phase.CONNECT, Phase.HELO, Phase.MAIL, Phase.RCPT, Phase.DATA}
    assert {"RBL_ZEN_TEST", "RBL_ZEN_XBL", "RCVD_IN_WL", "RHSBL_DBL_TEST", "URIBL_URIBL_TEST_TIMEOUT"} <= flt.symbols
    score_only, _ = make(lists=LISTS[:1])
    assert score_only.phases == {Phase.CONNECT}


async def test_connect_looks_up_every_ip_list_in_parallel() -> None:
    flt, res = make()
    v = await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.1"))
    assert names(v) == {"RBL_ZEN_TEST": 1.0, "RCVD_IN_WL": -5.0}
    assert sorted(q for q, _, _ in res.asked) == ["1.2.0.192.wl.test", "1.2.0.192.zen.test"]
    assert ("1.2.0.192.zen.test", "A", 0.5) in res.asked  # the per-list timeout is passed on


async def test_code_symbols_and_unlisted() -> None:
    flt, _ = make()
    v = await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.7"))
    assert names(v) == {"RBL_ZEN_XBL": 1.0, "RCVD_IN_WL": -5.0}
    clean = await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.3"))
    assert clean.symbols == ()


async def test_error_code_is_a_zero_weight_symbol_and_counted() -> None:
    flt, _ = make()
    before = lookups(flt, "zen.test", "error")
    v = await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.9"))
    assert names(v) == {"RBL_ZEN_TEST_ERROR": 0.0}
    assert "127.255.255.254" in v.symbols[0].detail
    assert lookups(flt, "zen.test", "error") == before + 1


async def test_timeout_is_unknown() -> None:
    flt, _ = make()
    v = await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.11"))
    assert names(v) == {"RBL_ZEN_TEST_TIMEOUT": 0.0}


async def test_ipv6_client_is_looked_up_by_nibbles() -> None:
    flt, res = make()
    await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="2001:db8::1"))
    nibbles = "1." + "0." * 23 + "8.b.d.0.1.0.0.2"
    assert f"{nibbles}.zen.test" in [q for q, _, _ in res.asked]


async def test_ipv4_only_lists_are_not_asked_about_ipv6() -> None:
    flt, res = make(lists=[{**LISTS[0], "ipv6": False}])
    v = await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="2001:db8::1"))
    assert v.symbols == () and res.asked == []


async def test_private_and_allowlisted_clients_are_not_looked_up() -> None:
    flt, res = make(skip_private=True)
    await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="10.1.2.3"))
    await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="127.0.0.2"))
    assert res.asked == []
    flt, res = make(allow_networks=["192.0.2.0/28"])
    v = await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.1"))
    assert v.symbols == () and res.asked == []


async def test_rhsbl_on_helo_and_sender_domain() -> None:
    flt, _ = make()
    helo = await flt.check(Phase.HELO, make_context(Phase.HELO, helo="Spam-Helo.Example."))
    assert names(helo) == {"RHSBL_DBL_TEST": 2.0}
    mail = await flt.check(Phase.MAIL, make_context(Phase.MAIL, mail_from="x@spammer.example"))
    assert names(mail) == {"RHSBL_DBL_TEST": 2.0}
    literal = await flt.check(Phase.HELO, make_context(Phase.HELO, helo="[192.0.2.1]"))
    bounce = await flt.check(Phase.MAIL, make_context(Phase.MAIL, mail_from=""))
    assert literal.symbols == () and bounce.symbols == ()


async def test_allow_domains_are_never_looked_up() -> None:
    flt, res = make(allow_domains=["spammer.example", "phish.example"])
    v = await flt.check(Phase.MAIL, make_context(Phase.MAIL, mail_from="x@mail.spammer.example"))
    assert v.symbols == () and res.asked == []


async def test_local_domains_are_never_looked_up() -> None:
    flt = RblFilter("rbl", {"lists": LISTS, "skip_private": False}, FilterEnv(local_domains=("example.edu",)))
    res = TableResolver(TABLE)
    flt._resolvers = dict.fromkeys(flt._resolvers, res)
    await flt.check(Phase.HELO, make_context(Phase.HELO, helo="mx.example.edu"))
    await flt.check(Phase.DATA, make_context(Phase.DATA, message="Subject: x\n\nhttps://www.example.edu/\n"))
    assert res.asked == []
    await flt.check(Phase.HELO, make_context(Phase.HELO, helo="mx.example.org"))
    assert [q for q, _, _ in res.asked] == ["mx.example.org.dbl.test"]


async def test_rcpt_rejects_with_postfix_wording_when_weight_reaches_threshold() -> None:
    flt, _ = make(reject_score=1.0, lists=[LISTS[0], LISTS[2]])
    v = await flt.check(Phase.RCPT, make_context(Phase.RCPT, peer_ip="192.0.2.1", helo="ok.example"))
    assert v.decision is Decision.REJECT
    assert str(v.reply) == (
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.test; "
        "Listed, see https://zen.test/q?192.0.2.1"
    )
    assert v.symbols == ()  # the connect phase already scored them


async def test_postmaster_is_exempt() -> None:
    flt, _ = make(reject_score=1.0, lists=LISTS[:1])
    ctx = make_context(Phase.RCPT, peer_ip="192.0.2.1", rcpt="<Postmaster@example.edu>")
    assert (await flt.check(Phase.RCPT, ctx)).decision is Decision.CONTINUE
    flt, _ = make(reject_score=1.0, lists=LISTS[:1], exempt_recipients=["abuse@example.edu"])
    ctx = make_context(Phase.RCPT, peer_ip="192.0.2.1", rcpt="abuse@example.edu")
    assert (await flt.check(Phase.RCPT, ctx)).decision is Decision.CONTINUE
    ctx = make_context(Phase.RCPT, peer_ip="192.0.2.1", rcpt="postmaster@example.edu")
    assert (await flt.check(Phase.RCPT, ctx)).decision is Decision.REJECT


async def test_rcpt_names_the_heaviest_listing_and_cleans_its_txt() -> None:
    flt, _ = make(reject_score=2.5, lists=[LISTS[0], LISTS[2]])
    ctx = make_context(Phase.RCPT, peer_ip="192.0.2.1", mail_from="a@spammer.example")
    v = await flt.check(Phase.RCPT, ctx)
    assert str(v.reply) == (
        "554 5.7.1 Service unavailable; Sender address [spammer.example] blocked using dbl.test; "
        "DBL listed  second line"
    )


async def test_dnswl_weight_outweighs_a_listing() -> None:
    flt, _ = make(reject_score=1.0)
    v = await flt.check(Phase.RCPT, make_context(Phase.RCPT, peer_ip="192.0.2.1"))
    assert v.decision is Decision.CONTINUE


async def test_below_threshold_errors_and_allowlisted_clients_pass() -> None:
    flt, _ = make(reject_score=1.5, lists=LISTS[:1])
    assert (await flt.check(Phase.RCPT, make_context(Phase.RCPT, peer_ip="192.0.2.1"))).decision is Decision.CONTINUE
    flt, _ = make(reject_score=0.0, lists=LISTS[:1])
    error = await flt.check(Phase.RCPT, make_context(Phase.RCPT, peer_ip="192.0.2.9"))
    assert error.decision is Decision.CONTINUE  # an error answer is never a listing
    flt, _ = make(reject_score=1.0, lists=[LISTS[0], LISTS[2]], allow_networks=["192.0.2.0/24"])
    ctx = make_context(Phase.RCPT, peer_ip="192.0.2.1", mail_from="a@spammer.example")
    assert (await flt.check(Phase.RCPT, ctx)).decision is Decision.CONTINUE


async def test_rcpt_decides_on_what_connect_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    flt, res = make(reject_score=1.0, lists=LISTS[:1])
    for sid in ("s1", "s2"):
        await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.11", session_id=sid))
    assert len(res.asked) == 2
    for rcpt in ("a@example.edu", "b@example.edu"):
        ctx = make_context(Phase.RCPT, peer_ip="192.0.2.11", session_id="s1", rcpt=rcpt)
        assert (await flt.check(Phase.RCPT, ctx)).decision is Decision.CONTINUE
    assert len(res.asked) == 2  # the connect-time timeout is not retried at every RCPT
    monkeypatch.setattr("spamgate.filters.rbl.filter.MEMO_SESSIONS", 1)
    await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.1", session_id="s3"))
    assert list(flt._memo) == ["s3"]  # bounded: the oldest sessions are forgotten


async def test_rcpt_without_txt_record_ends_after_the_zone() -> None:
    table = {("1.2.0.192.zen.test", "A"): A("127.0.0.2")}
    flt, _ = make(table, reject_score=1.0, lists=LISTS[:1])
    v = await flt.check(Phase.RCPT, make_context(Phase.RCPT, peer_ip="192.0.2.1"))
    assert str(v.reply) == "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.test"


async def test_uri_lists_at_data() -> None:
    flt, res = make()
    body = (
        "Subject: offer\n\nBuy at http://www.spam-url.example/x or http://phish.example/ or "
        "http://192.0.2.5/ or http://clean.example/ (again http://phish.example/y)\n"
    )
    v = await flt.check(Phase.DATA, make_context(Phase.DATA, message=body))
    # 127.0.0.8 has no bit 0x02 set: spam-url.example does not count on this list;
    # two listed URLs count the list's weight once
    assert [(s.name, s.score, s.detail) for s in v.symbols] == [
        ("URIBL_URIBL_TEST", 3.0, "phish.example 127.0.0.2, 192.0.2.5 127.0.0.2"),
    ]
    assert len(res.asked) == 4


async def test_uri_cap() -> None:
    flt, res = make(max_uris=1)
    body = "Subject: x\n\nhttp://clean.example/ http://phish.example/\n"
    v = await flt.check(Phase.DATA, make_context(Phase.DATA, message=body))
    assert v.symbols == () and [q for q, _, _ in res.asked] == ["clean.example.uribl.test"]


def test_bad_option_is_an_option_error() -> None:
    from spamgate.filters.sdk.api import OptionError

    with pytest.raises(OptionError) as exc:
        RblFilter("rbl", {"lists": [{"zone": "zen.test", "wieght": 1}]}, FilterEnv())
    assert exc.value.key == "lists.0.wieght"


def test_the_documented_example_config_builds_a_filter() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "rbl.md").read_text()
    example = re.findall(r"```toml\n(.*?)```", doc, re.S)[-1]
    table = tomllib.loads(example)["filters"]["rbl"]
    common = {"enabled", "order", "timeout", "on_error", "skip_networks"}
    flt = RblFilter("rbl", {k: v for k, v in table.items() if k not in common}, FilterEnv())
    assert [lst.label for lst in flt.options.lists] == ["zen", "list.dnswl.org", "dbl.spamhaus.org", "multi.surbl.org"]
    assert flt.phases == {Phase.CONNECT, Phase.HELO, Phase.MAIL, Phase.RCPT, Phase.DATA}
    expected = {"RBL_ZEN_SBL", "RBL_ZEN_XBL", "RCVD_IN_DNSWL", "RHSBL_DBL_SPAMHAUS_ORG", "URIBL_MULTI_SURBL_ORG"}
    assert expected <= flt.symbols
