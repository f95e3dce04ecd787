"""DKIM verification (all signatures, RSA and Ed25519) and signing keys."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from spamgate.filters.sdk.testing import canonical
from spamgate.filters.sender_auth.dkim_check import verify_dkim
from spamgate.filters.sender_auth.dkim_sign import load_signing_key
from spamgate.filters.services.auth_dns import DnsTempError
from tests.filters.sender_auth_support import FakeDns, make_key, signed

MSG = canonical("From: Alice <alice@example.org>\nTo: bob@example.edu\nSubject: hi\n\nHello Bob.\n")


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_signed_message_verifies_and_altered_body_fails(tmp_path: Path, algorithm: str) -> None:
    key, txt = make_key(tmp_path, "example.org", "sel", algorithm)
    dns = FakeDns({("sel._domainkey.example.org", "TXT"): [txt]})
    msg = signed(MSG, key)
    good = await verify_dkim(dns, msg)
    assert [(s.result, s.domain, s.selector, s.algorithm) for s in good.signatures] == [
        ("pass", "example.org", "sel", f"{algorithm}-sha256")
    ]
    assert good.passing_domains() == ["example.org"]
    bad = await verify_dkim(dns, msg.replace(b"Hello Bob.", b"Hello Bob!"))
    assert [s.result for s in bad.signatures] == ["fail"]
    assert bad.passing_domains() == []


async def test_every_signature_is_checked(tmp_path: Path) -> None:
    k1, txt1 = make_key(tmp_path, "example.org", "a", "rsa")
    k2, txt2 = make_key(tmp_path, "mailer.test", "b", "ed25519")
    dns = FakeDns({("a._domainkey.example.org", "TXT"): [txt1], ("b._domainkey.mailer.test", "TXT"): [txt2]})
    result = await verify_dkim(dns, signed(signed(MSG, k1), k2))
    assert sorted((s.domain, s.result) for s in result.signatures) == [("example.org", "pass"), ("mailer.test", "pass")]


async def test_missing_key_is_permerror_and_dns_trouble_temperror(tmp_path: Path) -> None:
    key, _txt = make_key(tmp_path, "example.org", "sel")
    msg = signed(MSG, key)
    assert [s.result for s in (await verify_dkim(FakeDns({}), msg)).signatures] == ["permerror"]
    temp = FakeDns({("sel._domainkey.example.org", "TXT"): DnsTempError("timeout")})
    assert [s.result for s in (await verify_dkim(temp, msg)).signatures] == ["temperror"]


async def test_wrong_key_fails(tmp_path: Path) -> None:
    key, _ = make_key(tmp_path, "example.org", "sel")
    _, other_txt = make_key(tmp_path, "example.org", "other")
    dns = FakeDns({("sel._domainkey.example.org", "TXT"): [other_txt]})
    assert [s.result for s in (await verify_dkim(dns, signed(MSG, key))).signatures] == ["fail"]


async def test_unsigned_message_has_no_signatures_and_no_lookups() -> None:
    dns = FakeDns({})
    result = await verify_dkim(dns, MSG)
    assert (result.signatures, result.arc, dns.queries) == ((), "none", [])


async def test_garbage_signature_is_permerror() -> None:
    result = await verify_dkim(FakeDns({}), b"DKIM-Signature: this is not tag=value;;; =\r\n" + MSG)
    assert [s.result for s in result.signatures] == ["permerror"]


def test_keys_load_from_pkcs8_pkcs1_and_raw_seed(tmp_path: Path) -> None:
    rkey = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pkcs8 = tmp_path / "rsa8.pem"
    pkcs8.write_bytes(rkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    assert load_signing_key("Example.ORG", "s", pkcs8).algorithm == b"rsa-sha256"
    seed = tmp_path / "ed.seed"
    raw = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    seed.write_bytes(base64.b64encode(raw) + b"\n")
    key = load_signing_key("example.org", "s", seed)
    assert (key.algorithm, key.domain) == (b"ed25519-sha256", "example.org")


@pytest.mark.parametrize("content", [b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                                     b"c2hvcnQ="])
def test_bad_keys_raise_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        load_signing_key("example.org", "s", path)
