"""The before-queue proxy contract, through a real spamgate in front of a real Postfix."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.conftest import SpamgateFactory
from tests.integration.protocol_support import (
    body_of,
    close_clients,
    count_with,
    delivered_form,
    header_block,
    headers,
    new_id,
    raw,
    session,
    stuff,
    transaction,
)
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import RawClient, send


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_clients()


def _direct_rcpt_reply(postfix: Postfix, rcpt: str) -> tuple[int, str]:
    """What Postfix itself answers to this RCPT (no spamgate in between)."""
    c = RawClient(postfix.port)
    try:
        c.reply()
        c.cmd("EHLO direct.test")
        c.cmd("MAIL FROM:<sender@example.org>")
        return c.cmd(f"RCPT TO:<{rcpt}>")
    finally:
        c.cmd("QUIT")
        c.close()


def test_body_relayed_byte_exact(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    body = (
        b".hidden line that starts with a dot\r\n"
        b"..two dots\r\n"
        b".\r\n"
        b"...\r\n"
        b" leading space and trailing tab\t\r\n"
        b"\r\n"
        + "Grüße aus Köln, 8-bit UTF-8: żółć ✓ 🙂\r\n".encode()
        + b"From the beginning of a line\r\n"
        + b"x" * 5000 + b"\r\n"
        + b"last line\r\n"
    )
    content = headers(mid) + body
    c = session(sg.port)
    c.cmd("MAIL FROM:<sender@example.org> BODY=8BITMIME")
    c.cmd("RCPT TO:<alice@example.edu>")
    assert c.cmd("DATA")[0] == 354
    c.send(stuff(content) + b".\r\n")
    code, text = c.reply()
    assert code == 250 and "queued as" in text
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert body_of(got) == body.replace(b"\r\n", b"\n")
    assert body_of(got) == delivered_form(stuff(content)).split(b"\n\n", 1)[1]
    # The original header block is intact below the trace headers.
    assert header_block(got).endswith(headers(mid).replace(b"\r\n", b"\n")[:-1])


def test_envelope_kept(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    # Envelope and header addresses differ on purpose: the envelope must survive the hop.
    res = send(sg.port, "bounce+123@lists.example.org", ["alice@example.edu"],
               headers(mid, to="everyone@lists.example.org") + b"hi\r\n")
    assert res.delivered, res
    got = postfix.wait_for(lambda m: mid.encode() in m)
    hdr = header_block(got)
    assert hdr.startswith(b"Return-Path: <bounce+123@lists.example.org>\n")
    assert b"\nDelivered-To: alice@example.edu\n" in hdr
    assert b"\nX-Original-To: alice@example.edu\n" in hdr
    assert re.search(rb"\nReceived: from client\.test \(unknown \[127\.0\.0\.1\]\)\n\tby spamgate\.test \(spamgate\) "
                     rb"with ESMTP id \w+\n\tfor <alice@example\.edu>;", hdr), hdr
    assert b"To: everyone@lists.example.org\n" in hdr
    # One summary line for the transaction, with the backend's queue id.
    assert res.data is not None
    queue_id = res.data[1].rsplit(" ", 1)[-1]
    summary = [ln for ln in sg.log().splitlines() if f"queued as {queue_id}" in ln]
    assert len(summary) == 1, sg.log()
    assert re.search(r"session=\w+ client=127\.0\.0\.1 helo='client\.test' from=<bounce\+123@lists\.example\.org> "
                     r"rcpts=<alice@example\.edu> .*size=\d+ .*action=accept .*duration=", summary[0]), summary[0]


def test_multiple_recipients_each_delivered_once(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    rcpts = ["alice@example.edu", "bob@example.edu", "carol@example.edu"]
    res = send(sg.port, "sender@example.org", rcpts, headers(mid) + b"to three\r\n")
    assert [code for code, _ in res.rcpt] == [250, 250, 250]
    assert res.delivered
    for r in rcpts:
        got = postfix.wait_for(lambda m: mid.encode() in m, rcpt=r)
        assert f"\nDelivered-To: {r}\n".encode() in header_block(got)
    # Postfix delivers each recipient's copy once; give nothing a chance to arrive twice unseen.
    send(sg.port, "sender@example.org", rcpts, headers(mid + "-fence") + b"fence\r\n")
    for r in rcpts:
        postfix.wait_for(lambda m: f"{mid}-fence".encode() in m, rcpt=r)
        assert count_with(postfix, f"<{mid}@".encode(), r) == 1


def test_unknown_recipient_550_passed_through_verbatim(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    direct = _direct_rcpt_reply(postfix, "nobody@example.edu")
    assert direct[0] == 550 and direct[1].startswith("5.1.1 <nobody@example.edu>")
    mid = new_id()
    res = send(sg.port, "sender@example.org", ["nobody@example.edu", "bob@example.edu"], headers(mid) + b"x\r\n")
    assert res.rcpt[0] == direct
    assert "User unknown" in res.rcpt[0][1]
    assert res.rcpt[1][0] == 250
    assert res.delivered
    postfix.wait_for(lambda m: mid.encode() in m, rcpt="bob@example.edu")


def test_relay_to_foreign_domain_denied_with_postfix_text(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    direct = _direct_rcpt_reply(postfix, "someone@example.com")
    assert direct[0] == 554 and "Relay access denied" in direct[1]
    res = send(sg.port, "sender@example.org", ["someone@example.com"], b"Subject: x\r\n\r\nx\r\n")
    assert res.rcpt == [direct]
    assert res.data is None


def test_xclient_real_client_in_postfix_received(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    for source, helo, tag in (("127.0.0.2", "xclient-test.example", "a"), ("127.0.0.3", "second-client.example", "b")):
        res = send(sg.port, "sender@example.org", ["alice@example.edu"], headers(f"{mid}{tag}") + b"x\r\n",
                   helo=helo, source_address=source)
        assert res.delivered, res
        marker = f"{mid}{tag}".encode()
        got = postfix.wait_for(lambda m: marker in m)  # noqa: B023 (used before the loop moves on)
        postfix_received = re.search(rb"\nReceived: (from [^\n]*\n\tby backend\.spamgate\.test \(Postfix\))", got)
        assert postfix_received is not None, got
        # The second message most likely reused the pooled backend connection: it must be re-identified.
        assert postfix_received.group(1).startswith(f"from {helo} (unknown [{source}])".encode())
    assert re.search(r"client=unknown\[127\.0\.0\.2\]", postfix.maillog())


def test_several_transactions_in_one_session(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    c = session(sg.port)
    assert transaction(c, "a@example.org", ["alice@example.edu"], headers(mid + "-1") + b"one\r\n")[0] == 250
    assert c.cmd("MAIL FROM:<b@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
    assert c.cmd("RSET")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 503
    assert transaction(c, "c@example.org", ["alice@example.edu"], headers(mid + "-3") + b"three\r\n")[0] == 250
    # A new MAIL without RSET in between is a protocol error, not a silent second transaction.
    assert c.cmd("MAIL FROM:<d@example.org>")[0] == 250
    assert c.cmd("MAIL FROM:<e@example.org>")[0] == 503
    assert c.cmd("QUIT")[0] == 221
    first = postfix.wait_for(lambda m: f"{mid}-1".encode() in m)
    third = postfix.wait_for(lambda m: f"{mid}-3".encode() in m)
    assert first.startswith(b"Return-Path: <a@example.org>")
    assert third.startswith(b"Return-Path: <c@example.org>")
    assert count_with(postfix, mid.encode()) == 2


def test_pipelining(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    c = session(sg.port)
    c.send(b"MAIL FROM:<p@example.org>\r\nRCPT TO:<alice@example.edu>\r\nRCPT TO:<nobody@example.edu>\r\nDATA\r\n")
    # The group's replies come back in one write, as from Postfix's smtpd: each one waited for the
    # next command's, which was already there (the RCPTs' needed Postfix's answers first).
    c.buf = c.sock.recv(65536)
    assert c.buf.count(b"\r\n") == 4, c.buf
    assert [c.reply()[0] for _ in range(4)] == [250, 250, 550, 354]
    # End of data, a whole second transaction and QUIT in one write: replies come back in order.
    c.send(headers(mid + "-1") + b"one\r\n.\r\nMAIL FROM:<q@example.org>\r\nRCPT TO:<bob@example.edu>\r\nDATA\r\n")
    first = c.reply()
    assert first[0] == 250 and "queued as" in first[1]
    assert [c.reply()[0] for _ in range(3)] == [250, 250, 354]
    c.send(headers(mid + "-2") + b"two\r\n.\r\nQUIT\r\n")
    second = c.reply()
    assert second[0] == 250 and "queued as" in second[1] and second[1] != first[1]
    assert c.reply()[0] == 221
    postfix.wait_for(lambda m: f"{mid}-1".encode() in m)
    postfix.wait_for(lambda m: f"{mid}-2".encode() in m, rcpt="bob@example.edu")


def test_held_pipelined_replies_all_come_out_before_a_disconnect(spamgate: SpamgateFactory) -> None:
    """Replies held for a pipelined group are written before the 421 of too many errors, in order."""
    sg = spamgate("[limits]\nmax_errors = 3\n")
    c = session(sg.port)
    c.send(b"MAIL FROM:<p@example.org>\r\nRCPT TO:<alice@example.edu>\r\n" + b"BOGUS\r\n" * 5)
    assert [c.reply()[0] for _ in range(6)] == [250, 250, 500, 500, 500, 421]
    assert c.closed()


def test_ehlo_advertises_the_extensions(spamgate: SpamgateFactory) -> None:
    sg = spamgate('[limits]\nmax_message_size = 20000\n')
    c = raw(sg.port)
    c.reply()
    code, text = c.cmd("EHLO client.test")
    assert code == 250
    keywords = {line.split()[0] for line in text.split("\n")[1:]}
    assert {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"} <= keywords
    assert "SIZE 20000" in text.split("\n")


def test_size_limits_552(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate('[limits]\nmax_message_size = 20000\n')
    mid = new_id()
    c = session(sg.port)
    code, text = c.cmd("MAIL FROM:<big@example.org> SIZE=20001")
    assert code == 552 and text.startswith("5.3.4 "), text
    assert c.cmd("MAIL FROM:<big@example.org> SIZE=1000")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(headers(mid + "-big") + (b"y" * 998 + b"\r\n") * 30 + b".\r\n")
    code, text = c.reply()
    assert code == 552 and text.startswith("5.3.4 "), text
    # The session goes on: the next transaction is relayed, the oversize one never was.
    assert transaction(c, "small@example.org", ["alice@example.edu"], headers(mid + "-small") + b"ok\r\n")[0] == 250
    postfix.wait_for(lambda m: f"{mid}-small".encode() in m)
    assert count_with(postfix, f"{mid}-big".encode()) == 0
    assert f"{mid}-big" not in postfix.maillog()


def test_swaks_delivers(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    r = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(sg.port), "--helo", "swaks.test",
         "--from", "swaks@example.org", "--to", "alice@example.edu",
         "--header", f"Subject: swaks {mid}", "--header", f"Message-Id: <{mid}@swaks.test>",
         "--body", "Sent by swaks.", "--timeout", "30"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"<-\s+250 2\.0\.0 Ok: (\d+ bytes )?queued as \w+", r.stdout), r.stdout
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert b"Sent by swaks." in got
    assert b"from swaks.test (unknown [127.0.0.1])" in got


def test_quit_and_noop(spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    c = raw(sg.port)
    banner = c.reply()
    assert banner == (220, "spamgate.test ESMTP spamgate")
    assert c.cmd("NOOP")[0] == 250
    assert c.cmd("QUIT")[0] == 221
    assert c.closed()
    with socket.create_connection(("127.0.0.1", sg.port)) as s:
        assert s.recv(100).startswith(b"220 ")


def test_smtputf8_envelope_and_utf8_helo(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    c = session(sg.port, helo="ünï.example")
    assert c.cmd("MAIL FROM:<jürgen@exämple.org> SMTPUTF8".encode())[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(headers(mid) + "Grüße\r\n.\r\n".encode())
    assert c.reply()[0] == 250
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert got.startswith("Return-Path: <jürgen@exämple.org>\n".encode())
    assert b"with UTF8SMTP" in got
    assert body_of(got) == "Grüße\n".encode()
