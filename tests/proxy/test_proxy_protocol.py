"""The PROXY v1/v2 parser: examples from the spec, an encoder round trip, and garbage."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spamgate.proxy.proxy_protocol import (
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyIncomplete,
    ProxyInfo,
    parse_header,
    read_proxy_header,
)

# -- a small encoder (what HAProxy writes), used for the round trips -------------------

def encode_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def encode_v2(src: str | None, dst: str | None = None, sport: int = 0, dport: int = 0,
              *, local: bool = False, tlvs: bytes = b"") -> bytes:
    if src is None or dst is None:
        return V2_SIGNATURE + bytes([0x20 if local else 0x21, 0x00]) + struct.pack("!H", len(tlvs)) + tlvs
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIGNATURE + bytes([0x20 if local else 0x21, fam]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def read(data: bytes, eof: bool = True, timeout: float = 2.0) -> ProxyInfo | None:
    async def go() -> ProxyInfo | None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return await read_proxy_header(reader, within=timeout)

    return asyncio.run(go())


# -- examples ---------------------------------------------------------------------------

def test_v1_tcp4_and_what_follows_stays_in_the_reader() -> None:
    async def go() -> tuple[ProxyInfo | None, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n")
        reader.feed_eof()
        info = await read_proxy_header(reader)
        return info, await reader.read()

    info, rest = asyncio.run(go())
    assert info == ProxyInfo(1, False, "inet", ("192.0.2.7", 56324), ("198.51.100.1", 25))
    assert rest == b"EHLO x\r\n"


def test_v1_tcp6_and_unknown() -> None:
    info = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 25\r\n")
    assert info is not None and info.source == ("2001:db8::1", 1000) and info.family == "inet6"
    unknown = read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
    assert unknown is not None and unknown.local and unknown.source is None


def test_v2_inet_with_tlvs_skipped_and_rest_kept() -> None:
    hdr = encode_v2("203.0.113.9", "127.0.0.1", 40000, 2525, tlvs=tlv(0x01, b"smtp") + tlv(0x05, b"x" * 40))

    async def go() -> tuple[ProxyInfo | None, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(hdr + b"QUIT\r\n")
        reader.feed_eof()
        return await read_proxy_header(reader), await reader.read()

    info, rest = asyncio.run(go())
    assert info == ProxyInfo(2, False, "inet", ("203.0.113.9", 40000), ("127.0.0.1", 2525))
    assert rest == b"QUIT\r\n"


def test_v2_local_is_a_health_check() -> None:
    info = read(encode_v2(None, local=True))
    assert info is not None and info.local and info.version == 2
    # LOCAL with an address block (HAProxy sends one sometimes): still local, block ignored.
    info = read(encode_v2("192.0.2.1", "192.0.2.2", 1, 2, local=True))
    assert info is not None and info.local and info.source is None


def test_v2_unix_family_keeps_the_connection_address() -> None:
    body = b"/run/a.sock".ljust(108, b"\0") + b"/run/b.sock".ljust(108, b"\0")
    hdr = V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", len(body)) + body
    info = read(hdr)
    assert info is not None and info.local and info.family == "unix" and info.source == ("/run/a.sock", 0)


def test_connect_and_close_is_no_error() -> None:
    assert read(b"") is None


@pytest.mark.parametrize("data, message", [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n", "expected"),
    (b"PROXY TCP4 192.0.2.777 198.51.100.1 1 25\r\n", "bad IPv4"),
    (b"PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n", "bad IPv4"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 25\r\n", "scoped"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n", "out of range"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 025 25\r\n", "bad port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 25\r\n", "bad port"),
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n", "CRLF"),
    (b"PROXY " + b"A" * 200 + b"\r\n", "CRLF"),
    (b"PROXY TCP4 192.0.2.7", "cut short"),
    (b"EHLO client.example\r\n", "not a PROXY header"),
    (V2_SIGNATURE[:8], "cut short"),
    (V2_SIGNATURE + b"\x11\x11\x00\x0c", "version"),
    (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "command"),
    (V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "needs 12"),
    (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "transport"),
    (V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), "family"),
    (V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(6), "cut short"),
    (V2_SIGNATURE + b"\x21\x11\xff\xff", "exceeds"),
])
def test_malformed_headers_are_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        read(data)


def test_a_silent_client_times_out() -> None:
    with pytest.raises(ProxyHeaderError, match="within"):
        read(b"PROXY TCP4 1.2", eof=False, timeout=0.05)


# -- properties ---------------------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports)
def test_v1_round_trip(addrs: tuple[str, str], sport: int, dport: int) -> None:
    data = encode_v1(addrs[0], addrs[1], sport, dport)
    info, used = parse_header(data + b"EHLO")
    assert used == len(data)
    assert (info.source, info.destination, info.local) == ((addrs[0], sport), (addrs[1], dport), False)


@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports,
       st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=64)), max_size=4))
def test_v2_round_trip(addrs: tuple[str, str], sport: int, dport: int, tlvs: list[tuple[int, bytes]]) -> None:
    data = encode_v2(addrs[0], addrs[1], sport, dport, tlvs=b"".join(tlv(k, v) for k, v in tlvs))
    info, used = parse_header(data + b"\r\n")
    assert used == len(data)
    assert (info.source, info.destination, info.local) == ((addrs[0], sport), (addrs[1], dport), False)


@settings(max_examples=300)
@given(st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=120).map(lambda b: b"PROXY " + b),
    st.binary(max_size=250).map(lambda b: V2_SIGNATURE + b),
))
def test_garbage_raises_only_the_parsers_error(data: bytes) -> None:
    try:
        parse_header(data)
    except ProxyIncomplete:
        pass
    except ProxyHeaderError:
        pass
    try:
        read(data)
    except ProxyHeaderError:
        pass
