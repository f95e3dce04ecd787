"""Limits and hostile input: each gives a clear SMTP error, never a crash or a lost session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import SpamgateFactory
from tests.integration.protocol_support import (
    close_clients,
    count_with,
    headers,
    new_id,
    raw,
    session,
    transaction,
)
from tests.integration.services.postfix import Postfix


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_clients()


def _healthy(sg_port: int, postfix: Postfix) -> None:
    """spamgate still relays mail end to end."""
    mid = new_id()
    c = session(sg_port)
    assert transaction(c, "sender@example.org", ["alice@example.edu"], headers(mid) + b"alive\r\n")[0] == 250
    postfix.wait_for(lambda m: mid.encode() in m)


@pytest.mark.parametrize(
    "template",
    [b"a\x01b-M@example.org", b"a\rb-M@example.org", b"a\tb-M@example.org", b"a\x7fb-M@example.org",
     b"a\x00b-M@example.org", b"M@example.org\x1b[31m", b"\"a\\\tb-M\"@example.org"],
    ids=repr,
)
def test_control_characters_in_envelope_501(template: bytes, postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    marker = new_id()
    address = template.replace(b"M", marker.encode())
    c = session(sg.port)
    code, text = c.cmd(b"MAIL FROM:<" + address + b">")
    assert code == 501, (code, text)
    assert c.cmd("MAIL FROM:<ok@example.org>")[0] == 250
    code, text = c.cmd(b"RCPT TO:<" + address.replace(b"example.org", b"example.edu") + b">")
    assert code == 501, (code, text)
    assert c.cmd("RSET")[0] == 250
    # Never forwarded: Postfix never saw it in any form (it logs every rejected RCPT).
    assert marker not in postfix.maillog()


def test_overlong_command_line_500(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    c = session(sg.port)
    assert c.cmd("NOOP " + "x" * 600) == (500, "5.5.2 Command line too long")
    assert c.cmd("MAIL FROM:<" + "a" * 600 + "@example.org>") == (500, "5.5.2 Command line too long")
    # Longer than the reader's buffer: discarded to the end of the line, then the same reply.
    assert c.cmd("NOOP " + "x" * 100_000) == (500, "5.5.2 Command line too long")
    assert c.cmd("NOOP")[0] == 250
    c.close()
    _healthy(sg.port, postfix)


def test_overlong_text_line_5xx_and_session_survives(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate("[limits]\nmax_line_length = 2000\n")
    mid = new_id()
    c = session(sg.port)
    code, text = transaction(c, "sender@example.org", ["alice@example.edu"],
                             headers(mid + "-long") + b"z" * 5000 + b"\r\n")
    assert code == 500 and text.startswith("5.5.2 Line too long"), (code, text)
    assert transaction(c, "sender@example.org", ["alice@example.edu"], headers(mid + "-ok") + b"z" * 1990 + b"\r\n")[
        0
    ] == 250
    postfix.wait_for(lambda m: f"{mid}-ok".encode() in m)
    assert count_with(postfix, f"{mid}-long".encode()) == 0


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xfe\xfd garbage", b"\x00\x01\x02\x03", "HÉLO ünïcode.example".encode(), b"\x16\x03\x01\x02\x00\x01\x00",
     b"GET / HTTP/1.1", b"", b"MAIL", b"RCPT TO:", b"DATA extra"],
    ids=repr,
)
def test_garbage_commands_500_no_crash(garbage: bytes, postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    c = session(sg.port)
    code, _ = c.cmd(garbage)
    assert 500 <= code < 600 and code != 554, code
    assert c.cmd("NOOP")[0] == 250
    assert sg.proc is not None and sg.proc.poll() is None
    assert "Traceback" not in sg.log()


def test_too_many_errors_421_and_disconnect(spamgate: SpamgateFactory) -> None:
    sg = spamgate("[limits]\nmax_errors = 3\n")
    c = session(sg.port)
    assert c.cmd(b"\xff bogus")[0] == 500
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 503
    c.send(b"BOGUS\r\n")
    assert c.reply()[0] == 500
    code, text = c.reply()
    assert code == 421 and text.startswith("4.7.0 "), (code, text)
    assert c.closed()
    # The next client starts with a clean slate.
    d = session(sg.port)
    assert d.cmd("NOOP")[0] == 250


def test_max_recipients_452(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate("[limits]\nmax_recipients = 2\n")
    mid = new_id()
    c = session(sg.port)
    assert c.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
    assert c.cmd("RCPT TO:<bob@example.edu>")[0] == 250
    code, text = c.cmd("RCPT TO:<carol@example.edu>")
    assert code == 452 and text.startswith("4.5.3 "), (code, text)
    assert c.cmd("DATA")[0] == 354
    c.send(headers(mid) + b"two of three\r\n.\r\n")
    assert c.reply()[0] == 250
    postfix.wait_for(lambda m: mid.encode() in m, rcpt="alice@example.edu")
    postfix.wait_for(lambda m: mid.encode() in m, rcpt="bob@example.edu")
    assert count_with(postfix, mid.encode(), "carol@example.edu") == 0


def test_max_sessions_per_ip_421(spamgate: SpamgateFactory) -> None:
    # Loopback is exempt by default (like Postfix's $mynetworks): exempt only one other address.
    sg = spamgate('[limits]\nmax_sessions_per_ip = 2\nexempt_networks = ["127.0.0.77/32"]\n')
    first, _second = session(sg.port), session(sg.port)
    extra = raw(sg.port)
    code, text = extra.reply()
    assert code == 421 and text.startswith("4.7.0 "), (code, text)
    assert extra.closed()
    # Another address is not affected.
    other = session(sg.port, source_address="127.0.0.2")
    assert other.cmd("NOOP")[0] == 250
    # A slot frees up when a session ends.
    assert first.cmd("QUIT")[0] == 221
    assert first.closed()
    for _ in range(50):
        again = raw(sg.port)
        if again.reply()[0] == 220:
            break
    else:
        pytest.fail("the per-IP slot was never released")
    assert again.cmd("NOOP")[0] == 250
    # An exempt network is never capped per address.
    exempt = [session(sg.port, source_address="127.0.0.77") for _ in range(4)]
    assert all(c.cmd("NOOP")[0] == 250 for c in exempt)


def test_abrupt_disconnect_mid_data_delivers_nothing(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    c = session(sg.port)
    assert c.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(headers(mid) + b"half a message\r\n" * 100)
    c.close()
    _healthy(sg.port, postfix)
    _healthy(sg.port, postfix)
    assert count_with(postfix, mid.encode()) == 0
    assert mid not in postfix.maillog()
    assert "internal error" not in sg.log()
