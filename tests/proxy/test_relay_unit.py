"""The backend relay against a scripted in-process SMTP server: XCLIENT/XFORWARD, pool, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from spamgate.proxy.backend import BackendReply, ClientFacts
from spamgate.proxy.config import Backend
from spamgate.proxy.errors import BackendError
from spamgate.proxy.relay import SmtpBackend
from spamgate.proxy.xclient import xclient_addr, xtext


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mx.example.org", "mx.example.org"),
        ("a+b=c", "a+2Bb+3Dc"),
        ("with space", "with+20space"),
        ("[UNAVAILABLE]", "[UNAVAILABLE]"),
        ("tab\there", "tab+09here"),
        ("crlf\r\nXCLIENT ADDR=6.6.6.6", "crlf+0D+0AXCLIENT+20ADDR+3D6.6.6.6"),
        ("é", "+C3+A9"),
        ("del\x7f", "del+7F"),
        ("", ""),
    ],
)
def test_xtext(value: str, expected: str) -> None:
    assert xtext(value) == expected
    assert all(33 <= ord(c) < 127 for c in xtext(value))


def test_xclient_addr() -> None:
    assert xclient_addr("192.0.2.1") == "192.0.2.1"
    assert xclient_addr("2001:db8::1") == "IPv6:2001:db8::1"


def test_backend_reply_ok() -> None:
    assert BackendReply(250, "2.0.0 Ok").ok
    assert not BackendReply(451, "4.3.0 no").ok
    assert not BackendReply(550, "5.1.1 no").ok
    assert not BackendReply(354, "go").ok


class FakeMTA:
    """A scripted SMTP server that records every command line."""

    def __init__(self, *, xclient: bool = True, xforward: bool = False, hang_on: str | None = None,
                 slow_on: str | None = None, chunking: bool = False, pipelining: bool = True) -> None:
        self.xclient = xclient
        self.pipelining = pipelining
        self.refuse_mail: bytes | None = None  # the reply to every MAIL, instead of 250
        self.xforward = xforward
        self.chunking = chunking
        self.data_start = b"354 go ahead\r\n"  # the reply to DATA
        self.data_final = b"250 2.0.0 Ok: queued as ABC123\r\n"  # after the message (DATA or BDAT)
        self.hang_on = hang_on
        self.slow_on = slow_on
        self.drop_on: str | None = None  # close the connection at this verb, once, without a reply
        self.lines: list[bytes] = []
        self.data: list[bytes] = []
        self.improper_pipelining = 0  # a command that came with more behind it while PIPELINING was not offered
        self.connections = 0
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()

    def drop_all(self) -> None:
        for w in self.writers:
            w.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        writer.write(b"220 fake ESMTP\r\n")
        mail_ok = False
        offered = False  # PIPELINING, in this connection's last EHLO reply
        try:
            while line := await reader.readline():
                self.lines.append(line)
                verb = line.split()[0].upper().decode() if line.strip() else ""
                if not offered and reader._buffer:  # Postfix: "improper command pipelining"
                    self.improper_pipelining += 1
                if verb == self.hang_on:
                    await asyncio.sleep(3600)
                if verb == self.drop_on:
                    self.drop_on = None
                    break
                if verb == self.slow_on:
                    await asyncio.sleep(0.5)
                if verb == "EHLO":
                    ext = [b"PIPELINING", b"8BITMIME"] if self.pipelining else [b"8BITMIME"]
                    offered = self.pipelining
                    if self.xclient:
                        ext.append(b"XCLIENT ADDR NAME HELO PROTO PORT LOGIN")
                    if self.xforward:
                        ext.append(b"XFORWARD NAME ADDR PROTO HELO")
                    if self.chunking:
                        ext.append(b"CHUNKING")
                    writer.write(b"250-fake\r\n" + b"".join(b"250-" + e + b"\r\n" for e in ext[:-1])
                                 + b"250 " + ext[-1] + b"\r\n")
                elif verb == "XCLIENT":
                    writer.write(b"220 fake ESMTP\r\n")
                elif verb == "MAIL":
                    mail_ok = self.refuse_mail is None
                    writer.write(self.refuse_mail or b"250 2.1.0 Ok\r\n")
                elif verb == "RCPT" and not mail_ok:
                    writer.write(b"503 5.5.1 Error: need MAIL command\r\n")
                elif verb == "RCPT" and b"nobody" in line:
                    writer.write(b"550 5.1.1 <nobody@example.edu>: Recipient address rejected: User unknown\r\n")
                elif verb == "DATA":
                    writer.write(self.data_start)
                    if not self.data_start.startswith(b"354"):
                        continue
                    body = b""
                    while (chunk := await reader.readline()) != b".\r\n":
                        body += chunk
                    self.data.append(body)
                    writer.write(self.data_final)
                elif verb == "BDAT":  # RFC 3030: exactly <size> bytes follow the command line
                    self.data.append(await reader.readexactly(int(line.split()[1])))
                    writer.write(self.data_final)
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    writer.write(b"250 2.0.0 Ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def verbs(self) -> list[str]:
        return [ln.split()[0].decode().upper() for ln in self.lines if ln.strip()]


@pytest.fixture
async def mta() -> AsyncIterator[FakeMTA]:
    m = FakeMTA()
    await m.start()
    yield m
    await m.stop()


def _backend(port: int, **kw: object) -> SmtpBackend:
    cfg = Backend.model_validate({"host": "127.0.0.1", "port": port, "timeout": 2, "connect_timeout": 2, **kw})
    return SmtpBackend(cfg, "gate.test")


CLIENT = ClientFacts(addr="192.0.2.7", port=4711, helo="mx.example.org", proto="ESMTP", login=None)


async def test_xclient_identifies_the_real_client(mta: FakeMTA) -> None:
    be = _backend(mta.port)
    txn = await be.begin(CLIENT)
    # The backend offers PIPELINING: MAIL waits for the first RCPT and goes out with it.
    assert await txn.mail("a@example.org", ["BODY=8BITMIME"]) == BackendReply(250, "2.1.0 Ok")
    assert "MAIL" not in mta.verbs()
    assert (await txn.rcpt("nobody@example.edu", [])).code == 550
    assert (await txn.rcpt("alice@example.edu", [])).ok
    reply = await txn.data(b"Subject: x\r\n\r\n.leading dot\r\n")
    assert reply == BackendReply(250, "2.0.0 Ok: queued as ABC123")
    await txn.finish(reset=False)
    xclient = [ln for ln in mta.lines if ln.startswith(b"XCLIENT")]
    assert xclient == [b"XCLIENT ADDR=192.0.2.7 NAME=[UNAVAILABLE] HELO=mx.example.org PROTO=ESMTP PORT=4711\r\n"]
    assert mta.verbs() == ["EHLO", "XCLIENT", "EHLO", "MAIL", "RCPT", "RCPT", "DATA"]
    # The EHLO after XCLIENT names the client's HELO, or the backend would log and check ours.
    assert mta.lines[0] == b"EHLO gate.test\r\n"
    assert mta.lines[2] == b"EHLO mx.example.org\r\n"
    assert b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n" in mta.lines
    assert mta.data == [b"Subject: x\r\n\r\n..leading dot\r\n"]
    await be.close()


async def test_xforward_when_no_xclient() -> None:
    m = FakeMTA(xclient=False, xforward=True)
    await m.start()
    try:
        be = _backend(m.port)
        counted = {"stage": "xforward", "class": "2xx"}
        before = REGISTRY.get_sample_value("spamgate_backend_replies_total", counted) or 0.0
        txn = await be.begin(ClientFacts(addr="2001:db8::5", helo="h e l o"))
        await txn.mail("", [])
        assert REGISTRY.get_sample_value("spamgate_backend_replies_total", counted) == before + 1
        xf = [ln for ln in m.lines if ln.startswith(b"XFORWARD")]
        assert xf == [b"XFORWARD NAME=[UNAVAILABLE] ADDR=IPv6:2001:db8::5 PROTO=ESMTP HELO=h+20e+20l+20o\r\n"]
        await txn.finish(reset=True)
        await be.close()
    finally:
        await m.stop()


async def test_pool_reuses_a_connection_with_rset(mta: FakeMTA) -> None:
    be = _backend(mta.port)
    t1 = await be.begin(CLIENT)
    await t1.mail("a@example.org", [])
    await t1.rcpt("alice@example.edu", [])
    await t1.finish(reset=True)
    t2 = await be.begin(ClientFacts(addr="192.0.2.8"))
    await t2.mail("b@example.org", [])
    await t2.rcpt("alice@example.edu", [])
    await t2.finish(reset=True)
    assert mta.connections == 1
    assert mta.verbs().count("RSET") == 2
    # The reused connection is re-identified for the new client.
    assert sum(ln.startswith(b"XCLIENT ADDR=192.0.2.8 ") for ln in mta.lines) == 1
    await be.close()
    assert mta.verbs()[-1] == "QUIT"


async def test_pool_disabled_closes_connections(mta: FakeMTA) -> None:
    be = _backend(mta.port, pool_size=0)
    for _ in range(2):
        t = await be.begin(CLIENT)
        await t.mail("a@example.org", [])
        await t.finish(reset=True)
    assert mta.connections == 2


async def test_stale_pooled_connection_is_replaced(mta: FakeMTA) -> None:
    be = _backend(mta.port)
    t1 = await be.begin(CLIENT)
    await t1.finish(reset=False)
    mta.drop_all()
    await asyncio.sleep(0.1)
    t2 = await be.begin(CLIENT)
    assert (await t2.mail("a@example.org", [])).ok
    await t2.finish(reset=True)
    assert mta.connections == 2
    await be.close()


async def test_connection_refused_is_a_4xx() -> None:
    m = FakeMTA()
    await m.start()
    port = m.port
    await m.stop()
    be = _backend(port)
    with pytest.raises(BackendError) as info:
        await be.begin(CLIENT)
    assert info.value.kind == "connect"
    assert info.value.reply.code == 451 and info.value.reply.enhanced.startswith("4.")
    assert not await be.ping()


@pytest.mark.parametrize("verb", ["EHLO", "MAIL"])
async def test_hanging_backend_times_out_with_a_4xx(verb: str) -> None:
    m = FakeMTA(hang_on=verb)
    await m.start()
    try:
        be = _backend(m.port, timeout=0.5)
        with pytest.raises(BackendError) as info:
            txn = await be.begin(CLIENT)
            await txn.mail("a@example.org", [])
            await txn.rcpt("alice@example.edu", [])  # MAIL goes out with it (PIPELINING)
        assert info.value.kind == "timeout"
        assert info.value.reply.code == 451
        assert str(info.value.reply).startswith("451 4.4.2 ")
    finally:
        await m.stop()


async def test_xclient_off_sends_nothing(mta: FakeMTA) -> None:
    be = _backend(mta.port, xclient="off")
    txn = await be.begin(CLIENT)
    await txn.mail("a@example.org", [])
    await txn.finish(reset=True)
    assert "XCLIENT" not in mta.verbs()
    await be.close()


async def test_connection_with_a_cancelled_command_is_never_pooled() -> None:
    # The client vanished while MAIL waited for the backend: that reply may still come and
    # would be paired with the next client's command. The connection must be closed.
    m = FakeMTA(slow_on="MAIL")
    await m.start()
    try:
        be = _backend(m.port)
        t = await be.begin(CLIENT)
        await t.mail("a@example.org", [])
        task = asyncio.ensure_future(t.rcpt("alice@example.edu", []))  # MAIL goes out with it
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await t.finish(reset=True)
        t2 = await be.begin(CLIENT)
        assert m.connections == 2
        assert "RSET" not in m.verbs()
        await t2.finish(reset=False)
        await be.close()
    finally:
        await m.stop()


# -- identity reuse: a pooled connection already identified as this client skips XCLIENT + EHLO --


async def _deliver(be: SmtpBackend, client: ClientFacts, rcpt: str = "alice@example.edu") -> BackendReply:
    txn = await be.begin(client)
    assert (await txn.mail("a@example.org", [])).ok
    await txn.rcpt(rcpt, [])
    reply = await txn.data(b"Subject: x\r\n\r\nbody\r\n")
    await txn.finish(reset=False)
    return reply


async def test_same_client_again_skips_xclient_and_rset(mta: FakeMTA) -> None:
    be = _backend(mta.port)
    assert (await _deliver(be, CLIENT)).ok
    assert (await _deliver(be, CLIENT)).ok
    assert mta.connections == 1
    # No RSET after a completed DATA, no second XCLIENT + EHLO for the very same attributes.
    assert mta.verbs() == ["EHLO", "XCLIENT", "EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA"]
    assert len(mta.data) == 2
    await be.close()


@pytest.mark.parametrize("other", [
    ClientFacts(addr="192.0.2.99", port=4711, helo="mx.example.org"),
    ClientFacts(addr="192.0.2.7", port=4712, helo="mx.example.org"),  # same host, another connection
    ClientFacts(addr="192.0.2.7", port=4711, helo="other.example.org"),
    ClientFacts(addr="192.0.2.7", port=4711, helo="mx.example.org", login="alice"),
    ClientFacts(addr="192.0.2.7", port=4711, helo="mx.example.org", name="mx.example.org"),
])
async def test_any_other_attribute_gets_xclient_again(mta: FakeMTA, other: ClientFacts) -> None:
    be = _backend(mta.port)
    assert (await _deliver(be, CLIENT)).ok
    assert (await _deliver(be, other)).ok
    assert mta.connections == 1
    xclient = [ln for ln in mta.lines if ln.startswith(b"XCLIENT")]
    assert len(xclient) == 2 and xclient[0] != xclient[1]
    assert mta.verbs()[6:9] == ["XCLIENT", "EHLO", "MAIL"]
    await be.close()


async def test_an_error_reply_forgets_the_identity(mta: FakeMTA) -> None:
    # A rejected recipient counts as an error in the backend's session: the next message, even
    # from the same client, starts from a fresh XCLIENT (which resets that session state).
    be = _backend(mta.port)
    await _deliver(be, CLIENT, rcpt="nobody@example.edu")
    assert (await _deliver(be, CLIENT)).ok
    assert [v for v in mta.verbs() if v == "XCLIENT"] == ["XCLIENT", "XCLIENT"]
    await be.close()


async def test_an_aborted_transaction_is_reset_and_reidentified(mta: FakeMTA) -> None:
    be = _backend(mta.port)
    t1 = await be.begin(CLIENT)
    await t1.mail("a@example.org", [])
    await t1.rcpt("alice@example.edu", [])
    await t1.finish(reset=True)  # the client sent RSET, or a filter refused the message
    assert (await _deliver(be, CLIENT)).ok
    assert mta.connections == 1
    assert mta.verbs() == ["EHLO", "XCLIENT", "EHLO", "MAIL", "RCPT", "RSET", "XCLIENT", "EHLO", "MAIL", "RCPT",
                           "DATA"]


async def test_aborted_before_any_rcpt_costs_the_backend_nothing(mta: FakeMTA) -> None:
    be = _backend(mta.port)
    t1 = await be.begin(CLIENT)
    await t1.mail("a@example.org", [])
    await t1.finish(reset=True)  # MAIL never went out: no RSET, and the identity still holds
    assert (await _deliver(be, CLIENT)).ok
    assert mta.connections == 1
    assert mta.verbs() == ["EHLO", "XCLIENT", "EHLO", "MAIL", "RCPT", "DATA"]
    await be.close()


async def test_a_refused_sender_is_the_answer_to_rcpt_and_mail_is_tried_again(mta: FakeMTA) -> None:
    mta.refuse_mail = b"553 5.1.8 <a@nowhere.invalid>: Sender address rejected: Domain not found\r\n"
    be = _backend(mta.port)
    txn = await be.begin(CLIENT)
    assert (await txn.mail("a@nowhere.invalid", [])).ok  # spamgate's own 250: nothing sent yet
    first = await txn.rcpt("alice@example.edu", [])
    assert first == BackendReply(553, "5.1.8 <a@nowhere.invalid>: Sender address rejected: Domain not found")
    mta.refuse_mail = None
    assert (await txn.rcpt("bob@example.edu", [])).ok
    assert (await txn.data(b"Subject: x\r\n\r\nbody\r\n")).ok
    await txn.finish(reset=False)
    assert mta.verbs() == ["EHLO", "XCLIENT", "EHLO", "MAIL", "RCPT", "MAIL", "RCPT", "DATA"]
    await be.close()


async def test_without_pipelining_mail_goes_out_at_once() -> None:
    m = FakeMTA(pipelining=False)
    m.refuse_mail = b"452 4.3.1 Insufficient system storage\r\n"
    await m.start()
    try:
        be = _backend(m.port)
        txn = await be.begin(CLIENT)
        assert await txn.mail("a@example.org", []) == BackendReply(452, "4.3.1 Insufficient system storage")
        assert m.verbs()[-1] == "MAIL"
        await txn.finish(reset=False)
        await be.close()
    finally:
        await m.stop()
    await be.close()


async def test_a_reused_connection_dead_at_the_first_command_is_replaced(mta: FakeMTA) -> None:
    # The backend closed the pooled connection, but we have not seen it yet (is_connected still
    # true): with XCLIENT skipped, MAIL is the first command to find out. The message still goes,
    # over a fresh connection identified from scratch.
    be = _backend(mta.port)
    assert (await _deliver(be, CLIENT)).ok
    mta.drop_on = "MAIL"
    assert (await _deliver(be, CLIENT)).ok
    assert mta.connections == 2
    assert mta.verbs() == ["EHLO", "XCLIENT", "EHLO", "MAIL", "RCPT", "DATA", "MAIL",
                           "EHLO", "XCLIENT", "EHLO", "MAIL", "RCPT", "DATA"]
    assert len(mta.data) == 2
    await be.close()


async def test_the_fresh_connection_is_spoken_to_as_it_offers(mta: FakeMTA) -> None:
    """Behind a balancer the replacement may reach another MTA: one without PIPELINING and XCLIENT,
    offering XFORWARD. MAIL and RCPT then go one at a time, after XFORWARD, not as built for the first."""
    be = _backend(mta.port)
    assert (await _deliver(be, CLIENT)).ok
    mta.drop_on = "MAIL"
    mta.pipelining, mta.xclient, mta.xforward = False, False, True
    before = len(mta.lines)
    assert (await _deliver(be, CLIENT)).ok
    assert mta.connections == 2
    assert mta.verbs()[before:] == ["MAIL", "EHLO", "XFORWARD", "MAIL", "RCPT", "DATA"]
    assert mta.improper_pipelining == 0
    assert len(mta.data) == 2
    await be.close()


async def test_the_pool_prefers_a_connection_identified_as_the_client(mta: FakeMTA) -> None:
    be = _backend(mta.port)
    other = ClientFacts(addr="192.0.2.99", helo="b.example.org")
    ta, tb = await be.begin(CLIENT), await be.begin(other)
    await ta.finish(reset=False)
    await tb.finish(reset=False)  # the newest idle connection is other's
    assert (await _deliver(be, CLIENT)).ok
    assert mta.connections == 2
    assert [v for v in mta.verbs() if v == "XCLIENT"] == ["XCLIENT", "XCLIENT"]
    await be.close()
