"""Core relay contract through real spamgate in front of real Postfix."""

from __future__ import annotations

import uuid

from tests.integration.conftest import SpamgateFactory
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import send


def _msg(mid: str, body: str = "Hello there.\r\n") -> bytes:
    return (
        f"From: Sender <sender@example.org>\r\nTo: alice@example.edu\r\nSubject: test {mid}\r\n"
        f"Message-ID: <{mid}@example.org>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n{body}"
    ).encode()


def test_message_relayed_with_backend_reply(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["alice@example.edu"], _msg(mid))
    assert res.mail[0] == 250
    assert res.rcpt == [(250, "2.1.5 Ok")]
    assert res.data is not None and res.data[0] == 250
    assert "queued as" in res.data[1], res.data
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert b"by spamgate.test (spamgate) with ESMTP" in got
    assert b"X-Spam-Status: No, score=0.0" in got


def test_ipv6_client_reaches_postfix_through_xclient(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    listen = ('[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
              '[[listen]]\nname = "mx6"\nhost = "::1"\nport = @PORT2@\nrole = "mx"\n')
    sg = spamgate(listen_toml=listen)
    mid = uuid.uuid4().hex
    res = send(sg.port2, "sender@example.org", ["alice@example.edu"], _msg(mid), host="::1", source_address="::1",
               helo="v6.example.org")
    assert res.data is not None and res.data[0] == 250, res
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert b"from v6.example.org (unknown [IPv6:::1])" in got


def test_null_sender_bounce_is_relayed_with_empty_return_path(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = uuid.uuid4().hex
    res = send(sg.port, "<>", ["alice@example.edu"], _msg(mid))
    assert res.mail == (250, "2.1.0 Ok") and res.data is not None and res.data[0] == 250, res
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert got.startswith(b"Return-Path: <>\n")
    assert "from=<>" in sg.log()


def test_unknown_command_is_refused_and_logged_with_the_session(spamgate: SpamgateFactory) -> None:
    from tests.integration.smtp_client import RawClient

    sg = spamgate()
    c = RawClient(sg.port)
    try:
        assert c.reply()[0] == 220
        code, text = c.cmd("FROB now")
        assert code == 500 and text.startswith("5.5.2 ")
        assert c.cmd("QUIT")[0] == 221
    finally:
        c.close()
    import re

    assert re.search(r"session=[0-9a-f]{10} unknown-command='FROB'", sg.log())
