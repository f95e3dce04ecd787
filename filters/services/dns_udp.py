"""Sending DNS queries: connected UDP sockets on the loop's selector, replies matched to their query.

Why not dnspython's resolver (we still parse replies with dnspython): it builds an asyncio
transport around every query's socket, renders the query through its general-purpose renderer
and looks for a negative TTL on every parent of the name. On the
2-core test VM that was 1.2-1.5 ms of CPU per lookup; a new client checked against 5 DNS
lists paid it five times on the event loop (docs/rbl.md, "Cost"). Here a query is one
``send`` of a datagram built in a few lines on a bare non-blocking socket, and the reply is
matched to its query by id and question, so a stray or forged datagram is dropped and the
lookup keeps waiting: 0.5-0.7x the CPU with a shared socket, 0.65-0.8x with a socket per
query (tests/bench/bench_dns_query.py), most of what is left being dnspython's parser.

What is kept from dnspython's resolver, on purpose:

* connected sockets: a nameserver that isn't running answers ICMP "port unreachable", which
  only a connected socket sees; the lookup drops that nameserver at once (fail fast);
* the timing: each nameserver gets ``timeout`` (or what is left of ``timeout x attempts``),
  the nameservers are tried in turn until the lifetime is used up; a nameserver that refuses
  or answers SERVFAIL, REFUSED, NOTIMP or FORMERR is dropped for this lookup;
* a truncated reply is asked again over TCP.

The source port: RFC 5452 asks for a random one per query, so that an attacker off the path,
who can make us ask a name of their choosing at a moment of their choosing (connect from an
address: we look it up), must guess the port as well as the 16-bit id. A nameserver on another
machine therefore gets a fresh socket, and a fresh random port from the kernel, for every
query (``queries_per_socket``): ~0.15-0.2 ms of CPU more per lookup on the test VM. Nobody off
this machine can send a datagram from a loopback address, so a loopback nameserver (the local
caching resolver the docs recommend) shares one socket between up to ``LOOPBACK_QUERIES`` queries.
Query ids come from dnspython (a CSPRNG) and are never shared by two queries in flight on one
socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
import weakref
from dataclasses import dataclass, field

import dns.asyncquery
import dns.entropy
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

__all__ = ["EDNS_PAYLOAD", "LOOPBACK_QUERIES", "DnsFailure", "Question", "UdpQueries", "queries_per_socket"]

LOOPBACK_QUERIES = 100
EDNS_PAYLOAD = 1232  # EDNS0 (RFC 6891), DNS Flag Day 2020's size: long TXT answers (SPF) fit more often
_OK_RCODES = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
# Header after the id: RD set, one question, no answers or authority, one additional (the OPT record).
_HEADER_REST = struct.pack("!HHHHH", int(dns.flags.RD), 1, 0, 0, 1)
# The OPT pseudo-record: root name, type OPT (41), class = our UDP payload size, TTL 0, no options.
_OPT = b"\x00" + struct.pack("!HHIH", 41, EDNS_PAYLOAD, 0, 0)


def queries_per_socket(ns: str) -> int:
    """How many queries one socket to this nameserver may carry (see the module docstring)."""
    return LOOPBACK_QUERIES if ipaddress.ip_address(ns).is_loopback else 1


@dataclass(frozen=True)
class Question:
    """What is asked: one name and type, class IN."""

    name: dns.name.Name
    rdtype: dns.rdatatype.RdataType

    def wire(self, qid: int) -> bytes:
        """The query datagram. Built here rather than by dnspython's renderer, which cost more
        CPU than the exchange itself; the name is dnspython's, already checked."""
        labels = b"".join(bytes((len(label),)) + label for label in self.name.labels)
        return struct.pack("!H", qid) + _HEADER_REST + labels + struct.pack("!HH", self.rdtype, 1) + _OPT

    def answered_by(self, response: dns.message.Message) -> bool:
        """A reply to this question (the id matched already): QR set, the same single question."""
        if not response.flags & dns.flags.QR or len(response.question) != 1:
            return False
        q = response.question[0]
        return q.rdtype == self.rdtype and q.rdclass == dns.rdataclass.IN and q.name == self.name

    def message(self) -> dns.message.Message:
        """The same query as a dnspython message (for the TCP retry of a truncated answer)."""
        return dns.message.make_query(self.name, self.rdtype, use_edns=0, payload=EDNS_PAYLOAD)


class DnsFailure(Exception):
    """No usable answer: ``timeout`` (the lifetime ran out) or ``error`` (every nameserver failed)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail  # "unreachable: ..." when every nameserver refused at the socket level


def _close(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    if not loop.is_closed():
        loop.remove_reader(sock.fileno())
    sock.close()


class _Channel:
    """One connected, non-blocking UDP socket to one nameserver and the queries waiting on it.

    A bare socket on the loop's selector rather than an asyncio transport: nothing to buffer
    (a datagram is sent whole or not at all), and a socket whose loop is gone (a test's) is
    closed quietly by the finalizer instead of warning as an unclosed transport.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, ns: str, port: int) -> None:
        self.loop = loop
        self.pending: dict[int, tuple[Question, asyncio.Future[dns.message.Message]]] = {}
        self.sent = 0
        self.limit = queries_per_socket(ns)
        self.broken = False
        family = socket.AF_INET6 if ":" in ns else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.connect((ns, port))  # the kernel picks a random ephemeral source port
            loop.add_reader(self.sock.fileno(), self._readable)
        except BaseException:
            self.sock.close()
            raise
        self._finalizer = weakref.finalize(self, _close, loop, self.sock)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Connected: the ICMP port/host unreachable for what was sent to this nameserver.
                self.broken = True
                self._fail(exc)
                return
            self._received(data)

    def _received(self, data: bytes) -> None:
        item = self.pending.get(int.from_bytes(data[:2], "big")) if len(data) >= 12 else None
        if item is None:
            return  # late (its query gave up) or not ours
        question, future = item
        try:
            response = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # garbage with a matching id: keep waiting for the real reply
        if not question.answered_by(response):
            return
        del self.pending[response.id]
        if not future.done():
            future.set_result(response)

    def _fail(self, exc: Exception) -> None:
        pending, self.pending = self.pending, {}
        for _, future in pending.values():
            if not future.done():
                future.set_exception(exc)

    def close(self) -> None:
        """Close the socket; a query still waiting on it fails now instead of at its timeout."""
        self.broken = True
        if not self.loop.is_closed():  # a closed loop's futures can't run their callbacks any more
            self._fail(ConnectionResetError("socket closed"))
        self._finalizer()

    async def ask(self, question: Question, wait: float) -> dns.message.Message:
        qid = dns.entropy.random_16()
        while qid in self.pending:
            qid = dns.entropy.random_16()
        future: asyncio.Future[dns.message.Message] = self.loop.create_future()
        self.pending[qid] = (question, future)
        self.sent += 1
        try:
            try:
                self.sock.send(question.wire(qid))
            except (BlockingIOError, InterruptedError):
                pass  # the socket's buffer is full: as good as lost on the way, the timeout decides
            except OSError:
                self.broken = True  # a refusal reported at this send: the next query gets a new socket
                raise
            async with asyncio.timeout(wait):
                return await future
        finally:
            item = self.pending.get(qid)
            if item is not None and item[1] is future:
                del self.pending[qid]


@dataclass
class UdpQueries:
    """Queries to ``nameservers`` on ``port`` with the resolver's timing (see the module docstring)."""

    nameservers: tuple[str, ...]
    port: int
    timeout: float
    attempts: int
    _channels: dict[str, _Channel] = field(default_factory=dict)

    async def ask(self, question: Question) -> dns.message.Message:
        """A NOERROR or NXDOMAIN response, or DnsFailure."""
        deadline = time.monotonic() + self.timeout * self.attempts
        servers = list(self.nameservers)
        errors: list[tuple[str, str, bool]] = []  # nameserver, what went wrong, at the socket level
        while servers:
            for ns in list(servers):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DnsFailure("timeout", "resolver lifetime exceeded")
                try:
                    response = await self._once(ns, question, min(self.timeout, left))
                except TimeoutError:
                    continue
                except OSError as exc:
                    errors.append((ns, str(exc.strerror or exc), True))
                    servers.remove(ns)
                    continue
                except (dns.exception.DNSException, EOFError) as exc:  # over TCP: a malformed or cut reply
                    errors.append((ns, str(exc) or type(exc).__name__, False))
                    servers.remove(ns)
                    continue
                if response.rcode() in _OK_RCODES:
                    return response
                errors.append((ns, dns.rcode.to_text(response.rcode()), False))
                servers.remove(ns)
        if not errors:
            raise DnsFailure("error", "no nameservers configured")
        unreachable = all(socket_level for _, _, socket_level in errors)
        detail = "; ".join(f"{ns}: {what}" for ns, what, _ in errors[:3])
        raise DnsFailure("error", f"unreachable: {detail}" if unreachable else detail)

    async def _once(self, ns: str, question: Question, wait: float) -> dns.message.Message:
        started = time.monotonic()
        response = await self._channel(ns).ask(question, wait)
        if response.flags & dns.flags.TC:
            left = max(wait - (time.monotonic() - started), 0.001)
            tcp: dns.message.Message = await dns.asyncquery.tcp(question.message(), ns, timeout=left, port=self.port)
            return tcp
        return response

    def _channel(self, ns: str) -> _Channel:
        loop = asyncio.get_running_loop()
        chan = self._channels.get(ns)
        if chan is not None and chan.loop is loop and not chan.broken and chan.sent < chan.limit:
            return chan
        if chan is not None:
            self._retire(chan)
        chan = self._channels[ns] = _Channel(loop, ns, self.port)
        return chan

    @staticmethod
    def _retire(chan: _Channel) -> None:
        """A replaced socket closes once its last query is answered or gives up."""
        if not chan.pending or chan.broken or chan.loop.is_closed():
            chan.close()
            return

        def close_when_idle(_: object) -> None:
            if not chan.pending:
                chan.close()

        for _, future in list(chan.pending.values()):
            future.add_done_callback(close_when_idle)
