"""SPF through pyspf with every lookup answered by our (here: in-memory) resolver."""

from __future__ import annotations

from typing import Any

import pytest

from spamgate.filters.services.auth_dns import DnsTempError
from spamgate.filters.services.spf import check_spf
from tests.filters.sender_auth_support import FakeDns

ZONE: dict[tuple[str, str], Any] = {
    ("pass.test", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
    ("fail.test", "TXT"): ["v=spf1 ip4:198.51.100.1 -all"],
    ("soft.test", "TXT"): ["v=spf1 ~all"],
    ("neutral.test", "TXT"): ["v=spf1 ?all"],
    ("broken.test", "TXT"): ["v=spf1 ip4:192.0.2.300 -all"],
    ("include.test", "TXT"): ["v=spf1 include:pass.test -all"],
    ("mx.test", "TXT"): ["v=spf1 mx -all"],
    ("mx.test", "MX"): [(10, "mail.mx.test")],
    ("mail.mx.test", "A"): ["192.0.2.10"],
    ("temp.test", "TXT"): DnsTempError("TXT temp.test: timeout"),
    ("incltemp.test", "TXT"): ["v=spf1 include:temp.test -all"],
    ("helo.example.org", "TXT"): ["v=spf1 a -all"],
    ("helo.example.org", "A"): ["192.0.2.10"],
    ("nospf.test", "TXT"): ["some other record"],
}


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("a@pass.test", "pass"),
        ("a@fail.test", "fail"),
        ("a@soft.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@nospf.test", "none"),
        ("a@nxdomain.test", "none"),
        ("a@broken.test", "permerror"),
        ("a@include.test", "pass"),
        ("a@mx.test", "pass"),
        ("a@temp.test", "temperror"),
        ("a@incltemp.test", "temperror"),
    ],
)
async def test_mail_from_results(sender: str, expected: str) -> None:
    result = await check_spf(FakeDns(ZONE), "192.0.2.10", sender, "helo.example.org", "mailfrom")
    assert (result.result, result.identity, result.domain) == (expected, "mailfrom", sender.split("@")[1])


async def test_null_sender_checks_postmaster_at_helo() -> None:
    dns = FakeDns(ZONE)
    result = await check_spf(dns, "192.0.2.10", "<>", "helo.example.org", "mailfrom")
    assert (result.result, result.domain) == ("pass", "helo.example.org")
    assert ("helo.example.org", "TXT") in dns.queries


async def test_helo_identity() -> None:
    good = await check_spf(FakeDns(ZONE), "192.0.2.10", "x@fail.test", "helo.example.org", "helo")
    bad = await check_spf(FakeDns(ZONE), "203.0.113.9", "x@pass.test", "helo.example.org", "helo")
    assert (good.result, good.identity, bad.result) == ("pass", "helo", "fail")


async def test_ip_literal_helo_is_none_without_lookups() -> None:
    dns = FakeDns(ZONE)
    result = await check_spf(dns, "192.0.2.10", None, "[192.0.2.10]", "helo")
    assert result.result == "none"
    assert dns.queries == []


async def test_ipv6_client() -> None:
    zone = {("v6.test", "TXT"): ["v=spf1 ip6:2001:db8::/32 -all"]}
    assert (await check_spf(FakeDns(zone), "2001:db8::5", "a@v6.test", "h.test", "mailfrom")).result == "pass"
    assert (await check_spf(FakeDns(zone), "2001:db9::5", "a@v6.test", "h.test", "mailfrom")).result == "fail"
