"""Byte-level message edits at end of DATA: canonical line endings, header removal and insertion."""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.utils import formatdate

from spamgate.filters.sdk.api import HeaderRemoval

__all__ = [
    "BareNewlines",
    "build_final",
    "canonicalize",
    "find_bare_newlines",
    "format_header",
    "received_header",
    "strip_headers",
]

_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")


class BareNewlines:
    __slots__ = ("cr", "lf")

    def __init__(self, lf: int, cr: int) -> None:
        self.lf = lf
        self.cr = cr

    def __bool__(self) -> bool:
        return bool(self.lf or self.cr)


def find_bare_newlines(data: bytes) -> BareNewlines:
    """Count LFs not preceded by CR and CRs not followed by LF (C-speed counts, no copies)."""
    crlf = data.count(b"\r\n")
    return BareNewlines(lf=data.count(b"\n") - crlf, cr=data.count(b"\r") - crlf)


def canonicalize(data: bytes) -> bytes:
    """Every line ending as CRLF: a bare LF or CR ends an ordinary line, never the data."""
    out = _ANY_NEWLINE.sub(b"\r\n", data)
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def _header_fields(header_bytes: bytes) -> list[tuple[str, str, bytes]]:
    """Split a CRLF header block into (name, value, raw bytes incl. folded lines)."""
    fields: list[tuple[str, str, bytes]] = []
    for line in header_bytes.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, value, raw = fields[-1]
            fields[-1] = (name, value + " " + line.strip().decode("latin-1"), raw + line + b"\r\n")
            continue
        bname, sep, bvalue = line.partition(b":")
        fields.append((bname.decode("latin-1") if sep else "", bvalue.strip().decode("latin-1"), line + b"\r\n"))
    return fields


def strip_headers(header_bytes: bytes, removals: Sequence[HeaderRemoval]) -> bytes:
    """The header block without the fields any removal matches (blank separator kept)."""
    if not removals:
        return header_bytes
    # Most messages carry none of the fields removed (our own X-Spam-* and Authentication-Results):
    # a field can't match when its name appears nowhere in the block, and then nothing is parsed.
    lowered = header_bytes.lower()
    wanted = {r.name.lower(): r for r in removals}
    if all(name.isascii() for name in wanted) and not any(name.encode() in lowered for name in wanted):
        return header_bytes
    kept = [
        raw
        for name, value, raw in _header_fields(header_bytes)
        if name.strip().lower() not in wanted or not any(r.matches(name, value) for r in removals)
    ]
    trailer = b"\r\n" if header_bytes.endswith(b"\r\n\r\n") or header_bytes == b"\r\n" else b""
    return b"".join(kept) + trailer


def format_header(name: str, value: str) -> bytes:
    """One header field; embedded line breaks become folds so no header can inject another."""
    if not _HEADER_NAME.match(name):
        raise ValueError(f"invalid header name {name!r}")
    lines = [ln for ln in re.split(r"\r\n|\r|\n", value)]
    folded = lines[0] + "".join(
        "\r\n" + (ln if ln[:1] in (" ", "\t") else "\t" + ln) for ln in lines[1:] if ln.strip()
    )
    return f"{name}: {folded}\r\n".encode("utf-8", "surrogateescape")


def received_header(
    *,
    helo: str | None,
    peer_ip: str,
    reverse_name: str | None,
    hostname: str,
    protocol: str,
    session_id: str,
    tls: str | None,
    login: str | None,
    recipient: str | None,
) -> tuple[str, str]:
    """RFC 5321 section 4.4 trace header for our own hop."""
    ip = f"IPv6:{peer_ip}" if ":" in peer_ip else peer_ip
    parts = [f"from {helo or 'unknown'} ({reverse_name or 'unknown'} [{ip}])"]
    if tls:
        parts.append(f"({tls})")
    if login:
        parts.append("(authenticated sender)")
    parts.append(f"by {hostname} (spamgate) with {protocol} id {session_id}")
    if recipient:
        parts.append(f"for <{recipient}>")
    return "Received", "\n\t".join(parts) + f"; {formatdate(localtime=False, usegmt=True)}"


def build_final(
    raw: bytes,
    header_end: int,
    prepend: Sequence[tuple[str, str]],
    removals: Sequence[HeaderRemoval],
) -> bytes:
    """Headers to add on top, matching headers removed, the body untouched."""
    top = b"".join(format_header(n, v) for n, v in prepend)
    if not removals:
        return top + raw
    return top + strip_headers(raw[:header_end], removals) + raw[header_end:]
