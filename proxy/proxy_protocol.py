"""HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): who the real client is.

A load balancer in front of spamgate connects from its own address; with ``send-proxy``
(v1) or ``send-proxy-v2`` it first writes one header naming the client it is relaying.
This module is the pure parser (:func:`parse_header`, :func:`parse_v1`, :func:`parse_v2`)
plus :func:`read_proxy_header`, which takes exactly the header's bytes off an
``asyncio.StreamReader`` (never a byte of the SMTP dialogue after it) under a timeout
and a size bound.

Answers (spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt):

* ``PROXY TCP4/TCP6`` and v2 ``PROXY`` over INET/INET6 give the client's address;
* v2 ``LOCAL`` (HAProxy's own health checks), v1 ``UNKNOWN``, v2 family ``UNSPEC`` and
  ``UNIX`` mean "use the connection's own addresses": :attr:`ProxyInfo.local` is True;
* v2 TLVs are skipped (bounded by the length field, never interpreted);
* anything else, or too long, or cut short, raises :class:`ProxyHeaderError`.

:func:`read_proxy_header` returns ``None`` when the peer closes before sending a single
byte: a balancer's connect-and-close health check, which is no error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

from spamgate.filters.sdk.errors import SpamgateError

__all__ = [
    "V2_SIGNATURE", "ProxyHeaderError", "ProxyIncomplete", "ProxyInfo", "parse_header", "parse_v1", "parse_v2",
    "read_proxy_header",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the spec's worst case, CRLF included
V2_MAX_DEFAULT = 4096  # addresses (216 bytes at most) plus room for a few TLVs (ALPN, SSL, unique id)
_V2_ADDR_LEN = {1: 12, 2: 36, 3: 216}  # INET, INET6, UNIX

Family = Literal["inet", "inet6", "unix", "unspec"]


class ProxyHeaderError(SpamgateError):
    """The PROXY header is malformed, truncated, too long or late; the connection is refused."""


class ProxyIncomplete(ProxyHeaderError):
    """More bytes are needed (from :func:`parse_header`); on a closed stream this is a truncation."""


@dataclass(frozen=True)
class ProxyInfo:
    """What the header says. ``local``: keep the connection's own addresses (health check, UNKNOWN)."""

    version: int
    local: bool
    family: Family = "unspec"
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def _port(raw: str) -> int:
    # The spec forbids leading zeros and signs: accept exactly 1-5 ASCII digits, 0-65535.
    if not (1 <= len(raw) <= 5 and raw.isascii() and raw.isdigit()) or (len(raw) > 1 and raw[0] == "0"):
        raise ProxyHeaderError(f"PROXY v1: bad port {raw[:8]!r}")
    value = int(raw)
    if value > 65535:
        raise ProxyHeaderError(f"PROXY v1: port out of range {value}")
    return value


def _ip(raw: str, v6: bool) -> str:
    try:
        addr = ipaddress.IPv6Address(raw) if v6 else ipaddress.IPv4Address(raw)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1: bad {'IPv6' if v6 else 'IPv4'} address {raw[:40]!r}") from None
    if "%" in raw:  # ipaddress accepts "fe80::1%eth0"; a scope id means nothing on the balancer's far side
        raise ProxyHeaderError("PROXY v1: scoped IPv6 address")
    return str(addr)


def parse_v1(line: bytes) -> ProxyInfo:
    """One complete v1 line, ``PROXY ...\\r\\n`` included."""
    if len(line) > V1_MAX:
        raise ProxyHeaderError(f"PROXY v1: header longer than {V1_MAX} bytes")
    if not line.startswith(b"PROXY ") or not line.endswith(b"\r\n"):
        raise ProxyHeaderError("PROXY v1: not a PROXY line")
    try:
        text = line[6:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1: non-ASCII bytes") from None
    if "\r" in text or "\n" in text:
        raise ProxyHeaderError("PROXY v1: stray CR or LF")
    if text == "UNKNOWN" or text.startswith("UNKNOWN "):
        return ProxyInfo(1, local=True)
    parts = text.split(" ")
    if len(parts) != 5 or parts[0] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY v1: expected 'TCP4|TCP6 SRC DST SPORT DPORT'")
    v6 = parts[0] == "TCP6"
    src, dst = _ip(parts[1], v6), _ip(parts[2], v6)
    return ProxyInfo(1, False, "inet6" if v6 else "inet", (src, _port(parts[3])), (dst, _port(parts[4])))


def _v2_lengths(head: bytes) -> tuple[int, int, int]:
    """Check the fixed 16 bytes; return (command, family byte, length of what follows)."""
    if len(head) != 16 or head[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("PROXY v2: bad signature")
    ver_cmd, fam, length = head[12], head[13], struct.unpack("!H", head[14:16])[0]
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2: unsupported version {ver_cmd >> 4}")
    if ver_cmd & 0xF not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2: unknown command {ver_cmd & 0xF}")
    return ver_cmd & 0xF, fam, length


def parse_v2(head: bytes, body: bytes) -> ProxyInfo:
    """The fixed 16 bytes and the ``length`` bytes after them (addresses, then TLVs)."""
    command, fam, length = _v2_lengths(head)
    if len(body) != length:
        raise ProxyHeaderError(f"PROXY v2: length field says {length}, got {len(body)} bytes")
    if command == 0:  # LOCAL: the balancer talking for itself (health checks); the block is ignored
        return ProxyInfo(2, local=True)
    family, transport = fam >> 4, fam & 0xF
    if family == 0:
        return ProxyInfo(2, local=True)
    if family not in _V2_ADDR_LEN or transport not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2: unsupported address family/transport 0x{fam:02x}")
    need = _V2_ADDR_LEN[family]
    if length < need:
        raise ProxyHeaderError(f"PROXY v2: address block of {length} bytes, family needs {need}")
    if family == 3:  # AF_UNIX: the client has no IP address; keep the connection's own
        src = body[:108].split(b"\0", 1)[0].decode("utf-8", "replace")
        dst = body[108:216].split(b"\0", 1)[0].decode("utf-8", "replace")
        return ProxyInfo(2, True, "unix", (src, 0), (dst, 0))
    size = 4 if family == 1 else 16
    src_ip = ipaddress.ip_address(body[:size])
    dst_ip = ipaddress.ip_address(body[size : 2 * size])
    sport, dport = struct.unpack("!HH", body[2 * size : 2 * size + 4])
    return ProxyInfo(2, False, "inet" if family == 1 else "inet6", (str(src_ip), sport), (str(dst_ip), dport))


def parse_header(data: bytes, max_size: int = V2_MAX_DEFAULT) -> tuple[ProxyInfo, int]:
    """Parse a header at the start of ``data``; return it and how many bytes it took.

    Raises :class:`ProxyIncomplete` when ``data`` is a valid beginning that needs more bytes.
    """
    if data[:1] == b"P":
        if data[:6] != b"PROXY "[: min(6, len(data))]:
            raise ProxyHeaderError("not a PROXY header")
        end = data.find(b"\r\n", 0, V1_MAX)
        if end < 0:
            if len(data) >= V1_MAX:
                raise ProxyHeaderError(f"PROXY v1: no CRLF within {V1_MAX} bytes")
            raise ProxyIncomplete("PROXY v1: header cut short")
        return parse_v1(data[: end + 2]), end + 2
    if data[:1] == b"\r":
        if not V2_SIGNATURE.startswith(data[:12]):
            raise ProxyHeaderError("PROXY v2: bad signature")
        if len(data) < 16:
            raise ProxyIncomplete("PROXY v2: header cut short")
        _, _, length = _v2_lengths(data[:16])
        if 16 + length > max_size:
            raise ProxyHeaderError(f"PROXY v2: header of {16 + length} bytes exceeds {max_size}")
        if len(data) < 16 + length:
            raise ProxyIncomplete("PROXY v2: header cut short")
        return parse_v2(data[:16], data[16 : 16 + length]), 16 + length
    if not data:
        raise ProxyIncomplete("no PROXY header yet")
    raise ProxyHeaderError("not a PROXY header")


async def read_proxy_header(
    reader: asyncio.StreamReader, within: float = 5.0, max_size: int = V2_MAX_DEFAULT
) -> ProxyInfo | None:
    """Read one header off ``reader``; None if the peer closed without sending anything."""
    try:
        async with asyncio.timeout(within):
            return await _read(reader, max_size)
    except TimeoutError:
        raise ProxyHeaderError(f"no complete PROXY header within {within:g}s") from None


async def _read(reader: asyncio.StreamReader, max_size: int) -> ProxyInfo | None:
    # Read only what the header's own framing announces, so the SMTP bytes after it stay in the reader.
    first = await reader.read(1)
    if not first:
        return None
    try:
        if first == b"P":
            line = bytearray(first)
            while not line.endswith(b"\n") and len(line) < V1_MAX:  # byte by byte: bounded, never past LF
                line += await reader.readexactly(1)
            return parse_header(bytes(line), max_size)[0]
        if first == b"\r":
            head = first + await reader.readexactly(15)
            _, _, length = _v2_lengths(head)
            if 16 + length > max_size:
                raise ProxyHeaderError(f"PROXY v2: header of {16 + length} bytes exceeds {max_size}")
            return parse_v2(head, await reader.readexactly(length))
    except asyncio.IncompleteReadError:
        raise ProxyHeaderError("PROXY header cut short (connection closed)") from None
    except ProxyIncomplete:
        raise ProxyHeaderError("PROXY v1: line does not end in CRLF") from None
    raise ProxyHeaderError("not a PROXY header")
