"""DMARC record parsing, alignment and policy choice; organizational domains."""

from __future__ import annotations

from pathlib import Path

import pytest

from spamgate.filters.sender_auth.dmarc import DmarcRecord, aligned, check_dmarc, evaluate, from_domain, parse_record
from spamgate.filters.services.auth_dns import DnsTempError
from spamgate.filters.services.public_suffix import DEFAULT_PSL_PATH, PublicSuffixList, load_psl
from spamgate.filters.services.spf import SpfResult
from tests.filters.sender_auth_support import FakeDns

PSL = PublicSuffixList(["com", "org", "uk", "co.uk", "*.ck", "!www.ck", "test"])


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("example.com", "example.com"),
        ("a.b.example.com", "example.com"),
        ("mail.example.co.uk", "example.co.uk"),
        ("x.y.foo.ck", "y.foo.ck"),
        ("a.www.ck", "www.ck"),
        ("co.uk", "co.uk"),
        ("host.unknowntld", "host.unknowntld"),
    ],
)
def test_org_domain(domain: str, org: str) -> None:
    assert PSL.org_domain(domain) == org


def test_debian_public_suffix_list_is_used_when_present(tmp_path: Path) -> None:
    assert Path(DEFAULT_PSL_PATH).exists(), "apt package publicsuffix provides it"
    assert load_psl(DEFAULT_PSL_PATH).org_domain("www.bbc.co.uk") == "bbc.co.uk"
    assert load_psl(str(tmp_path / "missing.dat")).org_domain("www.bbc.co.uk") == "co.uk"


@pytest.mark.parametrize(
    ("txt", "expected"),
    [
        ("v=DMARC1; p=reject", DmarcRecord("reject")),
        ("v=DMARC1;p=quarantine;sp=none;adkim=s;aspf=s;pct=50", DmarcRecord("quarantine", "none", "s", "s", 50)),
        ("v=DMARC1; p=bogus; rua=mailto:x@example.com", DmarcRecord("none")),
        ("v=DMARC1; p=bogus", None),
        ("v=spf1 -all", None),
        ("p=reject; v=DMARC1", None),
    ],
)
def test_parse_record(txt: str, expected: DmarcRecord | None) -> None:
    assert parse_record(txt) == expected


def test_alignment_modes() -> None:
    assert aligned("mail.example.com", "example.com", "r", PSL)
    assert not aligned("mail.example.com", "example.com", "s", PSL)
    assert aligned("EXAMPLE.com.", "example.com", "s", PSL)
    assert not aligned("example.org", "example.com", "r", PSL)


def spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, "mailfrom", domain)  # type: ignore[arg-type]


def test_pass_needs_an_aligned_pass() -> None:
    rec = DmarcRecord("reject")
    assert evaluate("example.com", rec, False, spf("pass", "bounce.example.com"), [], PSL).result == "pass"
    assert evaluate("example.com", rec, False, spf("fail", "example.com"), ["example.com"], PSL).result == "pass"
    failed = evaluate("example.com", rec, False, spf("pass", "evil.org"), ["evil.org"], PSL)
    assert (failed.result, failed.policy) == ("fail", "reject")
    strict = DmarcRecord("reject", aspf="s")
    assert evaluate("example.com", strict, False, spf("pass", "bounce.example.com"), [], PSL).result == "fail"


def test_subdomain_policy_and_pct_sampling() -> None:
    rec = DmarcRecord("reject", sp="quarantine", pct=30)
    sub = evaluate("a.example.com", rec, True, None, [], PSL, sample=lambda: 0.1)
    assert (sub.policy, sub.published) == ("quarantine", "quarantine")
    outside = evaluate("example.com", rec, False, None, [], PSL, sample=lambda: 0.9)
    assert (outside.policy, outside.published) == ("quarantine", "reject")


def test_from_domain() -> None:
    assert from_domain(["Alice <alice@Example.COM>"]) == "example.com"
    assert from_domain(["a@x.test, b@y.test"]) == ""
    assert from_domain([]) is None


async def test_record_found_at_org_domain_and_errors() -> None:
    zone = {("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; sp=none"]}
    sub = await check_dmarc(FakeDns(zone), ["x@news.example.com"], None, [], PSL)
    assert (sub.result, sub.policy, sub.from_domain) == ("fail", "none", "news.example.com")
    top = await check_dmarc(FakeDns(zone), ["x@example.com"], None, [], PSL)
    assert (top.result, top.policy) == ("fail", "reject")
    assert (await check_dmarc(FakeDns({}), ["x@example.com"], None, [], PSL)).result == "none"
    temp = FakeDns({("_dmarc.example.com", "TXT"): DnsTempError("servfail")})
    assert (await check_dmarc(temp, ["x@example.com"], None, [], PSL)).result == "temperror"
    two = FakeDns({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"]})
    assert (await check_dmarc(two, ["x@example.com"], None, [], PSL)).result == "none"
