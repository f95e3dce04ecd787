"""The message to the backend: our dot-stuffing against aiosmtplib's, DATA and BDAT on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from spamgate.proxy.backend import BackendReply
from spamgate.proxy.errors import BackendError
from spamgate.proxy.relay_data import dot_stuff, send_message, wire_message
from spamgate.proxy.smtp_client import BackendClosed, open_connection
from tests.proxy.test_relay_unit import CLIENT, FakeMTA, _backend

# Line ends, dots at line starts and plain bytes: the alphabet where the two can differ.
_PIECES = st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"\x00", b" ", b"\r\n.\r\n"]))


@given(_PIECES.map(b"".join))
def test_same_wire_bytes_as_aiosmtplib(message: bytes) -> None:
    """What aiosmtplib's ``SMTP.data`` would send (before its final ``.``) is what we send."""
    ours = dot_stuff(wire_message(message))
    assert ours == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"", b"\r\n"),
        (b".", b"..\r\n"),
        (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n"),
        (b"a\nb\rc", b"a\r\nb\r\nc\r\n"),
        (b"x\r\n.\r\n", b"x\r\n..\r\n"),  # a lone dot inside never ends the message early
    ],
)
def test_dot_stuffing_examples(message: bytes, expected: bytes) -> None:
    assert dot_stuff(wire_message(message)) == expected


@pytest.fixture
async def chunking_mta() -> AsyncIterator[FakeMTA]:
    m = FakeMTA(chunking=True)
    await m.start()
    yield m
    await m.stop()


@pytest.fixture
async def plain_mta() -> AsyncIterator[FakeMTA]:
    m = FakeMTA()
    await m.start()
    yield m
    await m.stop()


async def _send_via(mta: FakeMTA, message: bytes = b"Subject: x\r\n\r\nbody\r\n") -> BackendReply:
    """Start ``mta`` (scripted by the caller), send one message through it, stop it."""
    await mta.start()
    try:
        return await _send(mta, message)
    finally:
        await mta.stop()


async def _send(mta: FakeMTA, message: bytes) -> BackendReply:
    be = _backend(mta.port)
    txn = await be.begin(CLIENT)
    assert (await txn.mail("a@example.org", [])).ok
    assert (await txn.rcpt("alice@example.edu", [])).ok
    try:
        return await txn.data(message)
    finally:
        await txn.finish(reset=False)
        await be.close()


async def test_bdat_when_the_backend_offers_chunking(chunking_mta: FakeMTA) -> None:
    message = b"Subject: x\r\n\r\n.leading dot\nbare LF\r\n"
    reply = await _send(chunking_mta, message)
    assert reply == BackendReply(250, "2.0.0 Ok: queued as ABC123")
    assert "DATA" not in chunking_mta.verbs()
    # One command line with the exact size, no dot-stuffing, line endings made canonical.
    wire = b"Subject: x\r\n\r\n.leading dot\r\nbare LF\r\n"
    assert f"BDAT {len(wire)} LAST\r\n".encode() in chunking_mta.lines
    assert chunking_mta.data == [wire]


async def test_data_with_dot_stuffing_otherwise(plain_mta: FakeMTA) -> None:
    reply = await _send(plain_mta, b"Subject: x\r\n\r\n.leading dot\r\nlast line without CRLF")
    assert reply.ok
    assert "BDAT" not in plain_mta.verbs()
    assert plain_mta.data == [b"Subject: x\r\n\r\n..leading dot\r\nlast line without CRLF\r\n"]


@pytest.mark.parametrize("chunking", [False, True])
async def test_a_refusal_after_the_message_passes_through(chunking: bool) -> None:
    mta = FakeMTA(chunking=chunking)
    mta.data_final = b"554 5.7.1 Rejected by content policy\r\n"
    reply = await _send_via(mta)
    assert reply == BackendReply(554, "5.7.1 Rejected by content policy")


async def test_a_refused_data_command_passes_through() -> None:
    mta = FakeMTA()
    mta.data_start = b"451 4.3.0 Try again later\r\n"
    reply = await _send_via(mta)
    assert reply == BackendReply(451, "4.3.0 Try again later")
    assert mta.data == []


@pytest.mark.parametrize("start", [b"250 2.0.0 Ok\r\n", b"354 go ahead\r\n"])
async def test_no_success_without_the_backend_taking_the_message(start: bytes) -> None:
    """A 250 to DATA itself, or a 3xx after the message: never a 250 for the client (a 4xx instead)."""
    mta = FakeMTA()
    mta.data_start = start
    mta.data_final = b"354 again?\r\n"
    with pytest.raises(BackendError) as err:
        await _send_via(mta)
    assert 400 <= err.value.reply.code < 500


async def test_a_backend_gone_during_the_message_is_a_tempfail() -> None:
    mta = FakeMTA(chunking=True)
    mta.drop_on = "BDAT"
    with pytest.raises(BackendError) as err:
        await _send_via(mta)
    assert 400 <= err.value.reply.code < 500


async def test_send_message_on_a_closed_connection_raises(plain_mta: FakeMTA) -> None:
    conn = await open_connection("127.0.0.1", plain_mta.port, 2, 2)
    conn.close()
    with pytest.raises(BackendClosed):
        await send_message(conn, b"x\r\n")
