"""Answer specs, classification of DNS answers and option validation for the rbl filter."""

from __future__ import annotations

import ipaddress

import pytest

from spamgate.filters.rbl.lists import AnswerSpec, ListOptions, RblOptions, classify, reverse_ip
from spamgate.filters.sdk.api import OptionError
from spamgate.filters.sdk.options import parse_options
from spamgate.filters.services.dns import DnsAnswer


def lst(**kw: object) -> ListOptions:
    return parse_options(ListOptions, {"zone": "zen.test", **kw})


def ip(s: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(s)


@pytest.mark.parametrize(
    ("spec", "yes", "no"),
    [
        ("127.0.0.2", ["127.0.0.2"], ["127.0.0.3", "127.0.0.1"]),
        ("127.0.0.2..127.0.0.11", ["127.0.0.2", "127.0.0.11", "127.0.0.5"], ["127.0.0.1", "127.0.0.12"]),
        ("127.0.1.0/24", ["127.0.1.0", "127.0.1.255"], ["127.0.2.0"]),
        ("&0x08", ["127.0.0.8", "127.0.0.14"], ["127.0.0.4", "127.0.0.2"]),
        ("&2", ["127.0.0.2", "127.0.0.3"], ["127.0.0.4"]),
    ],
)
def test_answer_specs(spec: str, yes: list[str], no: list[str]) -> None:
    s = AnswerSpec.parse(spec)
    assert all(s.matches(ip(a)) for a in yes)
    assert not any(s.matches(ip(a)) for a in no)


@pytest.mark.parametrize("bad", ["x", "127.0.0.5..127.0.0.2", "&0", "&x", "::1"])
def test_bad_answer_specs_are_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        AnswerSpec.parse(bad)


def test_nxdomain_and_nodata_mean_not_listed() -> None:
    assert classify(DnsAnswer("nxdomain", ttl=60), lst()).result == "not_listed"
    assert classify(DnsAnswer("nodata", ttl=60), lst()).result == "not_listed"


def test_timeout_is_unknown_and_error_is_error() -> None:
    assert classify(DnsAnswer("timeout"), lst()).result == "timeout"
    assert classify(DnsAnswer("error", detail="SERVFAIL"), lst()).detail == "SERVFAIL"


def test_listed_only_for_counted_answers() -> None:
    only_sbl = lst(answers="127.0.0.2..127.0.0.3")
    got = classify(DnsAnswer("ok", ("127.0.0.2", "127.0.0.10"), 60), only_sbl)
    assert (got.result, got.codes) == ("listed", ("127.0.0.2",))
    assert classify(DnsAnswer("ok", ("127.0.0.10",), 60), only_sbl).result == "not_listed"


@pytest.mark.parametrize("answer", ["127.255.255.252", "127.255.255.254", "127.255.255.255", "10.0.0.2", "192.0.2.1"])
def test_spamhaus_error_codes_and_non_loopback_answers_are_errors(answer: str) -> None:
    got = classify(DnsAnswer("ok", (answer,), 60), lst())
    assert got.result == "error"
    assert answer in got.detail


def test_extra_error_answers() -> None:
    dnswl = lst(zone="list.dnswl.test", weight=-2, error_answers=["127.0.0.255"])
    assert classify(DnsAnswer("ok", ("127.0.0.255",), 60), dnswl).result == "error"
    assert classify(DnsAnswer("ok", ("127.255.255.254",), 60), dnswl).result == "listed"


def test_reverse_ip() -> None:
    assert reverse_ip("192.0.2.1") == "1.2.0.192"
    assert reverse_ip("::ffff:192.0.2.1") == "1.2.0.192"
    rev = reverse_ip("2001:db8::1")
    assert rev == "1." + "0." * 23 + "8.b.d.0.1.0.0.2"
    assert rev is not None and len(rev.split(".")) == 32
    assert reverse_ip("not-an-ip") is None


def test_symbol_names() -> None:
    assert lst().main_symbol == "RBL_ZEN_TEST"
    assert lst(kind="domain", zone="dbl.test").main_symbol == "RHSBL_DBL_TEST"
    assert lst(kind="uri", zone="multi.uribl.test", name="uribl").main_symbol == "URIBL_URIBL"
    assert lst(symbol="MY_LIST").main_symbol == "MY_LIST"
    syms = lst(codes={"127.0.0.4": "RBL_ZEN_XBL"}).all_symbols
    assert syms == {"RBL_ZEN_TEST", "RBL_ZEN_TEST_ERROR", "RBL_ZEN_TEST_TIMEOUT", "RBL_ZEN_XBL"}


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"lists": []}, "lists"),
        ({"lists": [{"zone": "zen.test", "bogus": 1}]}, "lists.0.bogus"),
        ({"lists": [{"zone": "zen.test", "kind": "asn"}]}, "lists.0.kind"),
        ({"lists": [{"zone": "zen.test", "answers": "127.0.0.x"}]}, "lists.0.answers"),
        ({"lists": [{"zone": "zen.test", "codes": {"127.0.0.2": "lower"}}]}, "lists.0.codes"),
        ({"lists": [{"zone": "bad zone"}]}, "lists.0.zone"),
        ({"lists": [{"zone": "zen.test", "nameservers": ["ns.example"]}]}, "lists.0.nameservers"),
        ({"lists": [{"zone": "zen.test"}, {"zone": "zen.test"}]}, "lists"),
        ({"lists": [{"zone": "zen.test"}], "allow_networks": ["300.0.0.0/8"]}, "allow_networks"),
        ({"lists": [{"zone": "zen.test"}], "reject_scor": 1}, "reject_scor"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as exc:
        parse_options(RblOptions, options)
    assert exc.value.key == key


def test_same_zone_twice_with_names() -> None:
    opts = parse_options(
        RblOptions,
        {
            "lists": [
                {"zone": "zen.test", "name": "zen-sbl", "answers": "127.0.0.2..127.0.0.9", "weight": 3},
                {"zone": "zen.test", "name": "zen-pbl", "answers": "127.0.0.10..127.0.0.11", "weight": 0.5},
            ]
        },
    )
    assert [x.main_symbol for x in opts.lists] == ["RBL_ZEN_SBL", "RBL_ZEN_PBL"]
