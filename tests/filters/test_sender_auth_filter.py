"""The sender_auth filter: symbols, Authentication-Results, DMARC enforcement, signing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dkim
import pytest

from spamgate.filters.sdk.api import Decision, FilterEnv, HeaderRemoval, OptionError, Phase, Verdict
from spamgate.filters.sdk.testing import canonical, make_context, run_filter
from spamgate.filters.sender_auth.filter import SenderAuthFilter
from tests.filters.sender_auth_support import FakeDns, make_key, signed

ENV = FilterEnv(hostname="mx.example.edu", local_domains=("example.edu",))
MSG = canonical("From: Alice <alice@example.org>\nTo: bob@example.edu\nSubject: hi\n\nHello Bob.\n")
ZONE: dict[tuple[str, str], Any] = {
    ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
    ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject"],
    ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=quarantine"],
    ("client.example.org", "TXT"): ["v=spf1 a -all"],
    ("client.example.org", "A"): ["192.0.2.10"],
}


def make(options: dict[str, Any] | None = None, zone: dict[tuple[str, str], Any] | None = None) -> SenderAuthFilter:
    flt = SenderAuthFilter("sender_auth", {"authserv_id": "mx.example.edu", **(options or {})}, ENV)
    flt._resolver = FakeDns(ZONE if zone is None else zone)
    return flt


def header(verdict: Verdict, name: str) -> str:
    values = [v for n, v in verdict.add_headers if n == name]
    assert len(values) == 1, verdict.add_headers
    return values[0]


async def test_spf_pass_aligned_dmarc_pass() -> None:
    ctx = make_context(message=MSG, peer_ip="192.0.2.10", mail_from="alice@example.org", helo="client.example.org")
    verdict = await run_filter(make(), Phase.DATA, ctx)
    assert verdict.decision is Decision.CONTINUE
    assert {s.name for s in verdict.symbols} == {"SPF_PASS", "SPF_HELO_PASS", "DKIM_NONE", "DMARC_PASS"}
    ar = header(verdict, "Authentication-Results")
    assert ar.startswith("mx.example.edu;")
    for part in ("spf=pass smtp.mailfrom=alice@example.org", "spf=pass smtp.helo=client.example.org",
                 "dkim=none", "dmarc=pass (p=reject) header.from=example.org", "arc=none"):
        assert part in ar
    assert verdict.remove_headers == (HeaderRemoval("Authentication-Results", "mx.example.edu"),)


async def test_dkim_pass_rescues_spf_fail(tmp_path: Path) -> None:
    key, txt = make_key(tmp_path, "example.org", "sel")
    flt = make(zone={**ZONE, ("sel._domainkey.example.org", "TXT"): [txt]})
    ctx = make_context(message=signed(MSG, key), peer_ip="203.0.113.5", mail_from="alice@example.org", helo=None)
    verdict = await run_filter(flt, Phase.DATA, ctx)
    names = {s.name for s in verdict.symbols}
    assert names == {"SPF_FAIL", "DKIM_VALID", "DMARC_PASS"}
    assert "dkim=pass header.d=example.org header.s=sel header.a=rsa-sha256 header.b=" in header(
        verdict, "Authentication-Results"
    )


async def test_dmarc_reject_scores_unless_enforced() -> None:
    ctx = make_context(message=MSG, peer_ip="203.0.113.5", mail_from="spoof@evil.test", helo=None)
    scored = await run_filter(make(), Phase.DATA, ctx)
    assert scored.decision is Decision.CONTINUE
    assert {s.name: s.score for s in scored.symbols}["DMARC_REJECT"] == 10.0
    assert "dmarc=fail (p=reject) header.from=example.org" in header(scored, "Authentication-Results")
    enforced = await run_filter(make({"dmarc_enforce": True}), Phase.DATA, ctx)
    assert enforced.decision is Decision.REJECT
    assert enforced.reply is not None and (enforced.reply.code, enforced.reply.enhanced) == (550, "5.7.1")
    assert "DMARC policy" in enforced.reply.text


async def test_dmarc_quarantine_is_a_configurable_score() -> None:
    msg = MSG.replace(b"alice@example.org", b"alice@example.com")
    ctx = make_context(message=msg, peer_ip="203.0.113.5", mail_from="x@evil.test", helo=None)
    verdict = await run_filter(make({"scores": {"DMARC_QUARANTINE": 20.0}, "dmarc_enforce": True}), Phase.DATA, ctx)
    assert verdict.decision is Decision.CONTINUE
    assert {s.name: s.score for s in verdict.symbols}["DMARC_QUARANTINE"] == 20.0


async def test_authenticated_user_mail_is_signed_and_verifies(tmp_path: Path) -> None:
    key, txt = make_key(tmp_path, "example.edu", "sg1", "ed25519")
    signing = {"example.edu": {"selector": "sg1", "key_file": str(tmp_path / "example.edu.sg1.ed25519.key")}}
    flt = make({"signing_domains": signing})
    msg = canonical("From: Secretary <secr@example.edu>\nTo: x@example.org\nSubject: minutes\n\nAttached.\n")
    verdict = await run_filter(flt, Phase.DATA, make_context(message=msg, user="secr"))
    assert [s.name for s in verdict.symbols] == ["DKIM_SIGNED"]
    assert header(verdict, "Authentication-Results") == "mx.example.edu; auth=pass smtp.auth=secr"
    value = header(verdict, "DKIM-Signature")
    assert not value.startswith("DKIM-Signature") and not value.endswith("\r\n")
    # what the engine will relay: its Received and X-Spam-* on top must not break the signature
    relayed = (b"Received: from x by mx.example.edu; now\r\nX-Spam-Status: No\r\n"
               + f"DKIM-Signature: {value}\r\n".encode() + msg)

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        assert name == b"sg1._domainkey.example.edu."
        return txt.encode()

    assert dkim.verify(relayed, dnsfunc=dnsfunc)
    assert not dkim.verify(relayed.replace(b"Attached.", b"Changed."), dnsfunc=dnsfunc)
    assert key.domain == "example.edu"


async def test_authenticated_mail_from_other_domains_is_not_signed(tmp_path: Path) -> None:
    make_key(tmp_path, "example.edu", "sg1")
    signing = {"example.edu": {"selector": "sg1", "key_file": str(tmp_path / "example.edu.sg1.rsa.key")}}
    flt = make({"signing_domains": signing})
    verdict = await run_filter(flt, Phase.DATA, make_context(message=MSG, user="alice"))
    assert [n for n, _ in verdict.add_headers] == ["Authentication-Results"]
    assert verdict.symbols == ()


async def test_checks_can_be_switched_off() -> None:
    flt = make({"spf_helo": False, "dkim": False, "dmarc": False})
    ctx = make_context(message=MSG, peer_ip="192.0.2.10", mail_from="alice@example.org")
    verdict = await run_filter(flt, Phase.DATA, ctx)
    assert [s.name for s in verdict.symbols] == ["SPF_PASS"]
    assert header(verdict, "Authentication-Results") == "mx.example.edu;\r\n\tspf=pass smtp.mailfrom=alice@example.org"


def test_authserv_id_defaults_to_hostname() -> None:
    assert SenderAuthFilter("sender_auth", {}, ENV).authserv_id == "mx.example.edu"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"scores": {"NOPE": 1}}, "scores"),
        ({"authserv_id": "has space"}, "authserv_id"),
        ({"sign_headers": ["subject"]}, "sign_headers"),
        ({"signing_domains": {"example.edu": {"selector": "s"}}}, "signing_domains.example.edu.key_file"),
        ({"signing_domains": {"example.edu": {"selector": "s", "key_file": "/nonexistent/k"}}},
         "signing_domains.example.edu.key_file"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(OptionError) as err:
        SenderAuthFilter("sender_auth", options, ENV)
    assert err.value.key == key
