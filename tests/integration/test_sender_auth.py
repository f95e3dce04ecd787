"""sender_auth through real SMTP: spamgate in front of Postfix, NSD publishing SPF, DKIM and DMARC.

Clients connect from 127.0.0.1, so ``ip4:127.0.0.0/8`` is "our" SPF pass. Names in
zones NSD does not serve draw REFUSED, which the resolver reports as an error: that
is our SPF temperror, through the real resolver path.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import dns.message
import dns.query
import pytest

from spamgate.filters.sender_auth.dkim_sign import SigningKey, load_signing_key, sign_message
from spamgate.proxy.tools.dkim_keygen import dns_record, generate
from spamgate.proxy.tools.passwd import add_user
from tests.integration.conftest import SpamgateFactory
from tests.integration.services.dns import DnsServer, start_dns, zone
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import send

pytestmark = pytest.mark.integration

AUTHSERV = "mx.example.edu"


@dataclass
class World:
    nsd: DnsServer
    remote_rsa: SigningKey
    remote_ed: SigningKey
    local_key_file: Path


def _key(tmp: Path, domain: str, selector: str, algorithm: str) -> tuple[Path, str]:
    pem, txt = generate(algorithm, 1024)
    path = tmp / f"{domain}.{selector}.key"
    path.write_bytes(pem)
    return path, dns_record(domain, selector, txt)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    keys = tmp_path_factory.mktemp("keys")
    rsa_path, rsa_rr = _key(keys, "signed.sender.test", "rsa1", "rsa")
    ed_path, ed_rr = _key(keys, "signed.sender.test", "ed1", "ed25519")
    local_path, local_rr = _key(keys, "example.edu", "sg1", "rsa")
    sender = zone("sender.test", [
        'pass IN TXT "v=spf1 ip4:127.0.0.0/8 -all"',
        'fail IN TXT "v=spf1 ip4:192.0.2.1 -all"',
        'softfail IN TXT "v=spf1 ip4:192.0.2.1 ~all"',
        "none IN A 192.0.2.1",
        'temperror IN TXT "v=spf1 include:spf.unserved.test -all"',
        'signed IN TXT "v=spf1 ip4:192.0.2.1 -all"',
        '_dmarc.signed IN TXT "v=DMARC1; p=reject"',
        rsa_rr,
        ed_rr,
        'reject IN TXT "v=spf1 ip4:192.0.2.1 -all"',
        '_dmarc.reject IN TXT "v=DMARC1; p=reject"',
        'quarantine IN TXT "v=spf1 ip4:192.0.2.1 -all"',
        '_dmarc.quarantine IN TXT "v=DMARC1; p=quarantine"',
        'client IN A 127.0.0.1',
        'client IN TXT "v=spf1 a -all"',
    ])
    local = zone("example.edu", ['@ IN TXT "v=spf1 -all"', '_dmarc IN TXT "v=DMARC1; p=reject"', local_rr])
    nsd = start_dns({"sender.test": sender, "example.edu": local}, tmp_path_factory.mktemp("nsd"))
    try:
        yield World(
            nsd,
            load_signing_key("signed.sender.test", "rsa1", rsa_path),
            load_signing_key("signed.sender.test", "ed1", ed_path),
            local_path,
        )
    finally:
        nsd.stop()


def config(world: World, options: str = "") -> str:
    return f"""
[dns]
nameservers = ["{world.nsd.host}"]
port = {world.nsd.port}
timeout = 2.0
attempts = 1

[filters.sender_auth]
enabled = true
authserv_id = "{AUTHSERV}"
{options}
"""


def message(from_addr: str, tag: str, body: str = "Hello Alice.\n", extra: str = "") -> bytes:
    text = (
        f"From: Sender <{from_addr}>\nTo: alice@example.edu\nSubject: {tag}\n"
        f"Date: Wed, 01 May 2024 12:00:00 +0000\nMessage-ID: <{tag}@sender.test>\n{extra}\n{body}"
    )
    return text.replace("\n", "\r\n").encode()


def delivered(postfix: Postfix, tag: str) -> email.message.EmailMessage:
    raw = postfix.wait_for(lambda m: tag.encode() in m)
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return msg  # type: ignore[return-value]


def our_results(msg: email.message.EmailMessage) -> list[str]:
    values = [" ".join(str(v).split()) for v in msg.get_all("Authentication-Results") or []]
    return [v for v in values if v.startswith(AUTHSERV + ";")]


def test_spf_results(world: World, spamgate: SpamgateFactory, postfix: Postfix) -> None:
    sg = spamgate(config(world))
    for result in ("pass", "fail", "softfail", "none", "temperror"):
        tag = f"spf-{result}-{uuid.uuid4().hex}"
        sender = f"bob@{result}.sender.test"
        res = send(sg.port, sender, ["alice@example.edu"], message(sender, tag), helo="client.sender.test")
        assert res.delivered, (result, res, sg.log())
        msg = delivered(postfix, tag)
        [ar] = our_results(msg)
        assert f"spf={result} smtp.mailfrom={sender}" in ar, ar
        assert "spf=pass smtp.helo=client.sender.test" in ar, ar
        assert f"SPF_{result.upper()}(" in str(msg["X-Spam-Status"])


def test_dkim_signed_message_verifies_and_altered_body_fails(
    world: World, spamgate: SpamgateFactory, postfix: Postfix
) -> None:
    sg = spamgate(config(world))
    sender = "news@signed.sender.test"
    for key in (world.remote_rsa, world.remote_ed):
        for altered in (False, True):
            tag = f"dkim-{key.selector}-{altered}-{uuid.uuid4().hex}"
            raw = message(sender, tag)
            signed = f"DKIM-Signature: {sign_message(raw, key)}\r\n".encode() + raw
            if altered:
                signed = signed.replace(b"Hello Alice.", b"Hello Alice!")
            res = send(sg.port, sender, ["alice@example.edu"], signed)
            assert res.delivered, res
            msg = delivered(postfix, tag)
            [ar] = our_results(msg)
            status = str(msg["X-Spam-Status"])
            if altered:
                assert "dkim=fail" in ar and "DKIM_INVALID(" in status, ar
                assert "dmarc=fail (p=reject)" in ar and "DMARC_REJECT(" in status, ar
            else:
                expected = f"dkim=pass header.d=signed.sender.test header.s={key.selector}"
                assert f"{expected} header.a={key.algorithm_name}" in ar and "DKIM_VALID(" in status, ar
                # SPF fails (not from 192.0.2.1) but the aligned DKIM pass satisfies DMARC
                assert "spf=fail" in ar and "dmarc=pass (p=reject) header.from=signed.sender.test" in ar, ar


def test_dmarc_reject_is_enforced_at_end_of_data(
    world: World, spamgate: SpamgateFactory, postfix: Postfix, tmp_path: Path
) -> None:
    qdir = tmp_path / "quarantine"
    sg = spamgate(config(world, "dmarc_enforce = true") + f'\n[actions]\nquarantine = 8.0\n'
                  f'[pipeline]\nquarantine_dir = "{qdir}"\n')
    tag = f"dmarc-reject-{uuid.uuid4().hex}"
    res = send(sg.port, "ceo@reject.sender.test", ["alice@example.edu"], message("ceo@reject.sender.test", tag))
    assert res.data is not None and res.data[0] == 550, res
    assert res.data[1].startswith("5.7.1") and "DMARC policy" in res.data[1]
    # p=quarantine: DMARC_QUARANTINE's score (8.0) reaches the [actions] quarantine threshold
    qtag = f"dmarc-quarantine-{uuid.uuid4().hex}"
    spoof = "ceo@quarantine.sender.test"
    res = send(sg.port, spoof, ["alice@example.edu"], message(spoof, qtag))
    assert res.data is not None and res.data[0] == 250, res
    held = [p.read_bytes() for p in qdir.glob("*.eml")]
    assert len(held) == 1 and qtag.encode() in held[0]
    assert b"DMARC_QUARANTINE(8.0)" in held[0]
    assert not any(t.encode() in m for m in postfix.messages() for t in (tag, qtag))


def test_forged_results_claiming_our_authserv_id_are_removed(
    world: World, spamgate: SpamgateFactory, postfix: Postfix
) -> None:
    sg = spamgate(config(world))
    tag = f"forged-ar-{uuid.uuid4().hex}"
    forged = f"Authentication-Results: {AUTHSERV}; dkim=pass header.d=reject.sender.test\n"
    theirs = "Authentication-Results: mx.other.test; spf=pass smtp.mailfrom=x@other.test\n"
    raw = message("ceo@reject.sender.test", tag, extra=forged + theirs)
    assert send(sg.port, "ceo@reject.sender.test", ["alice@example.edu"], raw).delivered
    msg = delivered(postfix, tag)
    [ours] = our_results(msg)
    assert "dkim=none" in ours and "dmarc=fail" in ours
    assert any("mx.other.test" in str(v) for v in msg.get_all("Authentication-Results") or [])


def _txt_from_nsd(nsd: DnsServer):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        reply = dns.query.udp(dns.message.make_query(name.decode(), "TXT"), nsd.host, port=nsd.port, timeout=timeout)
        for rrset in reply.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return None

    return lookup


def test_mail_from_authenticated_user_is_signed_and_verifies(
    world: World, spamgate: SpamgateFactory, postfix: Postfix, tmp_path: Path
) -> None:
    passwd = tmp_path / "passwd"
    add_user(passwd, "secr", "s3cret-pass")
    sg = spamgate(
        config(world, f'[filters.sender_auth.signing_domains."example.edu"]\nselector = "sg1"\n'
                      f'key_file = "{world.local_key_file}"\n'),
        auth_toml=f'local_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{passwd}"\n',
        listen_toml='[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "submission"\nallow_plaintext_auth = true\n',
    )
    tag = f"signed-by-us-{uuid.uuid4().hex}"
    raw = message("secr@example.edu", tag, body="The minutes are attached.\n")
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=30) as smtp:
        code, ehlo = smtp.ehlo("laptop.example.edu")
        assert code == 250 and b"AUTH" in ehlo, ehlo
        smtp.login("secr", "s3cret-pass")
        smtp.sendmail("secr@example.edu", ["alice@example.edu"], raw)
    msg_bytes = postfix.wait_for(lambda m: tag.encode() in m)
    crlf = msg_bytes.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"DKIM-Signature:" in crlf and b"d=example.edu" in crlf
    lookup = _txt_from_nsd(world.nsd)
    assert dkim.verify(crlf, dnsfunc=lookup)
    assert not dkim.verify(crlf.replace(b"The minutes", b"The budget"), dnsfunc=lookup)
    msg = email.message_from_bytes(msg_bytes, policy=email.policy.compat32)
    assert our_results(msg) == [f"{AUTHSERV}; auth=pass smtp.auth=secr"]  # type: ignore[arg-type]
