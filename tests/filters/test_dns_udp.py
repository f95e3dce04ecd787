"""The DNS query path: real UDP (and TCP) sockets on loopback against scripted nameservers.

What a stub resolver must get right besides the happy path: only the reply to *this* question
counts (strays, garbage and forgeries with a matching id are dropped), concurrent lookups on
one socket get their own answers, the source port changes, truncation falls back to TCP, a
failing nameserver hands over to the next, and a silent one costs the lifetime, no more.
"""

from __future__ import annotations

import asyncio
import gc
import struct
import time
from collections.abc import AsyncIterator, Callable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spamgate.filters.sdk.api import DnsSettings
from spamgate.filters.services.dns import CachingResolver
from spamgate.filters.services.dns_udp import (
    EDNS_PAYLOAD,
    LOOPBACK_QUERIES,
    DnsFailure,
    Question,
    UdpQueries,
    queries_per_socket,
)

A = dns.rdatatype.A
Reply = Callable[[dns.message.Message, tuple[str, int]], list[bytes]]


def answer(query: dns.message.Message, *records: str, rdtype: str = "A", ttl: int = 300) -> dns.message.Message:
    r = dns.message.make_response(query)
    for rec in records:
        r.answer.append(dns.rrset.from_text(query.question[0].name, ttl, "IN", rdtype, rec))
    return r


class Server(asyncio.DatagramProtocol):
    """A nameserver on a loopback UDP port whose replies are whatever ``reply`` returns."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.sources: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sources.append(addr)
        assert self.transport is not None
        for out in self.reply(dns.message.from_wire(data), addr):
            self.transport.sendto(out, addr)


_OPEN: list[asyncio.BaseTransport] = []


@pytest.fixture(autouse=True)
async def _close_servers() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


async def serve(reply: Reply, host: str = "127.0.0.1", port: int = 0) -> tuple[Server, int]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(lambda: Server(reply), local_addr=(host, port))
    _OPEN.append(transport)
    return server, transport.get_extra_info("sockname")[1]


def q(name: str, rdtype: dns.rdatatype.RdataType = A) -> Question:
    return Question(dns.name.from_text(name), rdtype)


@given(st.lists(st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True), min_size=1, max_size=6),
       st.sampled_from(["A", "AAAA", "TXT", "PTR"]), st.integers(0, 0xFFFF))  # fmt: skip
def test_the_query_datagram_is_the_one_dnspython_renders(labels: list[str], rdtype: str, qid: int) -> None:
    name = dns.name.from_text(".".join(labels) + ".test")
    expected = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
    expected.id = qid
    assert Question(name, dns.rdatatype.RdataType.make(rdtype)).wire(qid) == expected.to_wire()


async def test_only_the_reply_to_this_question_is_taken() -> None:
    def reply(query: dns.message.Message, _: tuple[str, int]) -> list[bytes]:
        other = dns.message.make_query("other.test", "A")
        other.id = query.id
        not_a_reply = answer(query, "127.0.0.9")
        not_a_reply.flags &= ~dns.flags.QR
        wire_id = struct.pack("!H", query.id)
        return [
            answer(dns.message.make_query(query.question[0].name, "A"), "127.0.0.7").to_wire(),  # another id
            wire_id + b"\x81\x80garbage",  # the right id, unparseable
            answer(other, "127.0.0.8").to_wire(),  # the right id, another question
            not_a_reply.to_wire(),  # the right id and question, but not a response
            answer(query, "127.0.0.2").to_wire(),
        ]

    _, port = await serve(reply)
    udp = UdpQueries(("127.0.0.1",), port, timeout=2.0, attempts=1)
    response = await udp.ask(q("x.bl.test"))
    assert [r.to_text() for r in response.answer[0]] == ["127.0.0.2"]


async def test_concurrent_lookups_share_a_socket_and_get_their_own_answers() -> None:
    held: list[tuple[dns.message.Message, tuple[str, int]]] = []
    server: Server

    def reply(query: dns.message.Message, addr: tuple[str, int]) -> list[bytes]:
        held.append((query, addr))
        if len(held) < 20:
            return []
        # all twenty are in: answer them in reverse order, each with its own number
        assert server.transport is not None
        for hq, haddr in reversed(held):
            n = hq.question[0].name.labels[0].decode()
            server.transport.sendto(answer(hq, f"127.0.1.{n}").to_wire(), haddr)
        return []

    server, port = await serve(reply)
    udp = UdpQueries(("127.0.0.1",), port, timeout=5.0, attempts=1)
    responses = await asyncio.gather(*(udp.ask(q(f"{i}.bl.test")) for i in range(20)))
    assert [r.answer[0][0].to_text() for r in responses] == [f"127.0.1.{i}" for i in range(20)]
    assert len({addr for _, addr in held}) == 1  # one socket
    assert len({hq.id for hq, _ in held}) == 20  # ids unique among queries in flight


async def test_a_loopback_resolver_gets_a_new_source_port_every_100_queries() -> None:
    server, port = await serve(lambda query, _: [answer(query, "127.0.0.2").to_wire()])
    udp = UdpQueries(("127.0.0.1",), port, timeout=2.0, attempts=1)
    for i in range(LOOPBACK_QUERIES * 2 + 1):
        await udp.ask(q(f"{i}.bl.test"))
    ports = [p for _, p in server.sources]
    assert LOOPBACK_QUERIES == 100
    assert len(set(ports[:100])) == 1 and len(set(ports)) == 3, sorted(set(ports))


def test_a_nameserver_off_this_machine_gets_a_socket_per_query() -> None:
    # RFC 5452: a random source port per query where someone off the path could race the reply.
    assert [queries_per_socket(ns) for ns in ("192.0.2.53", "2001:db8::53", "10.0.0.1")] == [1, 1, 1]
    assert [queries_per_socket(ns) for ns in ("127.0.0.1", "127.0.0.53", "::1")] == [100, 100, 100]


async def test_a_socket_per_query_still_matches_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a remote nameserver gets, run against a loopback one (the only kind a test may use).
    monkeypatch.setattr("spamgate.filters.services.dns_udp.LOOPBACK_QUERIES", 1)
    server, port = await serve(lambda query, _: [answer(query, "127.0.0.2").to_wire()])
    udp = UdpQueries(("127.0.0.1",), port, timeout=2.0, attempts=1)
    first = udp._channel("127.0.0.1")
    responses = await asyncio.gather(*(udp.ask(q(f"{i}.bl.test")) for i in range(10)))
    assert all(r.answer[0][0].to_text() == "127.0.0.2" for r in responses)
    assert len({p for _, p in server.sources}) == 10
    assert first.sock.fileno() == -1  # every retired socket closed once its query was answered


async def test_a_truncated_reply_is_asked_again_over_tcp() -> None:
    def reply(query: dns.message.Message, _: tuple[str, int]) -> list[bytes]:
        r = dns.message.make_response(query)
        r.flags |= dns.flags.TC
        return [r.to_wire()]

    tcp_queries: list[dns.message.Message] = []

    async def tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        query = dns.message.from_wire(await reader.readexactly(size))
        tcp_queries.append(query)
        long = "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(120))  # over 1,232 bytes
        strings = " ".join(f'"{long[i:i + 255]}"' for i in range(0, len(long), 255))
        wire = answer(query, strings, rdtype="TXT").to_wire(max_size=65535)
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    # One port number for both: the TCP listener's, free for UDP too (else try another).
    for _ in range(20):
        tcp = await asyncio.start_server(tcp_client, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        try:
            await serve(reply, port=port)
            break
        except OSError:
            tcp.close()
            await tcp.wait_closed()
    try:
        response = await UdpQueries(("127.0.0.1",), port, timeout=5.0, attempts=1).ask(q("big.test", dns.rdatatype.TXT))
    finally:
        tcp.close()
        await tcp.wait_closed()
    assert len(tcp_queries) == 1 and b"".join(response.answer[0][0].strings).startswith(b"v=spf1 ip4:192.0.2.0")


async def test_a_failing_nameserver_hands_over_to_the_next() -> None:
    _, port = await serve(lambda query, _: [_servfail(query)], "127.0.0.1")
    second, _ = await serve(lambda query, _: [answer(query, "127.0.0.2").to_wire()], "127.0.0.2", port)
    udp = UdpQueries(("127.0.0.1", "127.0.0.2"), port, timeout=2.0, attempts=2)
    response = await udp.ask(q("x.bl.test"))
    assert response.answer[0][0].to_text() == "127.0.0.2" and len(second.sources) == 1


def _servfail(query: dns.message.Message) -> bytes:
    r = dns.message.make_response(query)
    r.set_rcode(dns.rcode.SERVFAIL)
    return r.to_wire()


async def test_every_nameserver_failing_is_an_error_naming_them() -> None:
    _, port = await serve(lambda query, _: [_servfail(query)])
    with pytest.raises(DnsFailure) as caught:
        await UdpQueries(("127.0.0.1",), port, timeout=2.0, attempts=2).ask(q("x.bl.test"))
    assert caught.value.kind == "error" and caught.value.detail == "127.0.0.1: SERVFAIL"
    assert not caught.value.detail.startswith("unreachable")


async def test_a_silent_nameserver_costs_the_lifetime_and_no_more() -> None:
    server, port = await serve(lambda query, _: [])
    start = time.monotonic()
    with pytest.raises(DnsFailure) as caught:
        await UdpQueries(("127.0.0.1",), port, timeout=0.3, attempts=2).ask(q("x.bl.test"))
    took = time.monotonic() - start
    assert caught.value.kind == "timeout" and 0.55 <= took < 2.0, took
    assert len(server.sources) == 2  # asked once per attempt


async def test_cname_chains_are_followed_with_the_lowest_ttl() -> None:
    def reply(query: dns.message.Message, _: tuple[str, int]) -> list[bytes]:
        name = query.question[0].name.to_text()
        r = dns.message.make_response(query)
        if name.startswith("loop"):
            r.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", name))
        else:
            r.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "target.test."))
            r.answer.append(dns.rrset.from_text("target.test.", 300, "IN", "A", "127.0.0.4"))
        return [r.to_wire()]

    _, port = await serve(reply)
    resolver = CachingResolver(DnsSettings(nameservers=("127.0.0.1",), port=port, cache_size=10))
    found = await resolver.query("alias.test", "A")
    assert found.status == "ok" and found.records == ("127.0.0.4",) and found.ttl == 60
    looped = await resolver.query("loop.test", "A")
    assert looped.status == "error" and "CNAME chain" in looped.detail


async def test_sockets_are_closed_when_the_resolver_is_gone() -> None:
    _, port = await serve(lambda query, _: [answer(query, "127.0.0.2").to_wire()])
    udp = UdpQueries(("127.0.0.1",), port, timeout=2.0, attempts=1)
    await udp.ask(q("x.bl.test"))
    chan = udp._channels["127.0.0.1"]
    sock = chan.sock
    udp._retire(chan)
    assert sock.fileno() == -1
    await udp.ask(q("y.bl.test"))  # a new socket, and the resolver then dropped with it open:
    del udp, chan
    gc.collect()  # warnings are errors in this suite: an unclosed socket would fail the test at exit


async def test_an_ipv6_nameserver_is_asked_over_ipv6() -> None:
    server, port = await serve(lambda query, _: [answer(query, "127.0.0.2").to_wire()], "::1")
    response = await UdpQueries(("::1",), port, timeout=2.0, attempts=1).ask(q("x.bl.test"))
    assert response.answer[0][0].to_text() == "127.0.0.2" and server.sources[0][0] == "::1"


async def test_a_query_waiting_on_a_closed_socket_fails_at_once() -> None:
    server, port = await serve(lambda query, _: [])  # never answers
    udp = UdpQueries(("127.0.0.1",), port, timeout=30.0, attempts=1)
    waiting = asyncio.ensure_future(udp.ask(q("x.bl.test")))
    while not server.sources:
        await asyncio.sleep(0.01)
    start = time.monotonic()
    udp._channels["127.0.0.1"].close()  # as when a send on it reported the nameserver unreachable
    with pytest.raises(DnsFailure) as caught:
        await waiting
    assert time.monotonic() - start < 5 and caught.value.detail.startswith("unreachable:"), caught.value.detail
