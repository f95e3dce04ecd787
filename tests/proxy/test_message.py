"""Byte-level message handling: line endings, smuggling sequences, header removal and insertion."""

from __future__ import annotations

import re

import pytest

from spamgate.filters.sdk.api import HeaderRemoval
from spamgate.proxy.message import (
    build_final,
    canonicalize,
    find_bare_newlines,
    format_header,
    received_header,
    strip_headers,
)
from tests.smuggling import BARE_NEWLINE_VARIANTS


def _wire_lines(canonical: bytes) -> list[bytes]:
    """What a correct sender puts on the wire: CRLF lines, dot-stuffed."""
    assert canonical.endswith(b"\r\n")
    return [b"." + ln if ln.startswith(b".") else ln for ln in canonical[:-2].split(b"\r\n")]


@pytest.mark.parametrize("seq", list(BARE_NEWLINE_VARIANTS.values()), ids=list(BARE_NEWLINE_VARIANTS))
def test_smuggled_end_of_data_becomes_ordinary_lines(seq: bytes) -> None:
    data = b"Subject: first\r\n\r\nbody" + seq + b"MAIL FROM:<evil@example.org>\r\n"
    assert find_bare_newlines(data)
    out = canonicalize(data)
    assert not find_bare_newlines(out)
    assert re.fullmatch(rb"(?:[^\r\n]*\r\n)*", out)
    # After dot-stuffing no line of the relayed data is a lone dot: nothing can end DATA early.
    assert b"." not in _wire_lines(out)
    assert b"MAIL FROM:<evil@example.org>\r\n" in out


@pytest.mark.parametrize("seq", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n"], ids=repr)
def test_dot_between_bare_newlines_is_stuffed_to_double_dot(seq: bytes) -> None:
    out = canonicalize(b"a" + seq + b"b\r\n")
    assert out == b"a\r\n.\r\nb\r\n"
    assert _wire_lines(out) == [b"a", b"..", b"b"]


def test_null_byte_variant_is_not_a_line_ending() -> None:
    data = b"body\r\n\x00.\r\nMAIL FROM:<evil@example.org>\r\n"
    assert not find_bare_newlines(data)
    assert canonicalize(data) == data
    assert b"." not in _wire_lines(data)


def test_bare_newline_counts() -> None:
    bn = find_bare_newlines(b"a\nb\rc\r\nd\n\r")
    assert (bn.lf, bn.cr) == (2, 2)
    assert not find_bare_newlines(b"a\r\nb\r\n")
    assert not find_bare_newlines(b"")
    # CR CR LF: one bare CR, then a proper CRLF.
    bn = find_bare_newlines(b"a\r\r\n")
    assert (bn.lf, bn.cr) == (0, 1)
    # LF CR: both bare (the order matters).
    bn = find_bare_newlines(b"a\n\rb")
    assert (bn.lf, bn.cr) == (1, 1)


def test_canonicalize_keeps_crlf_data_byte_for_byte() -> None:
    data = "Subject: ünïcödé\r\n\r\n..leading dots stay\r\n\t tabs \r\n".encode() + bytes(range(32, 256)) + b"\r\n"
    assert canonicalize(data) == data


def test_canonicalize_line_endings() -> None:
    assert canonicalize(b"a\nb\rc\r\n") == b"a\r\nb\r\nc\r\n"
    assert canonicalize(b"a\r\r\nb") == b"a\r\n\r\nb\r\n"
    assert canonicalize(b"a\n\rb") == b"a\r\n\r\nb\r\n"
    assert canonicalize(b"no newline at end") == b"no newline at end\r\n"
    assert canonicalize(b"") == b""


HEADERS = (
    b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"X-Spam-Status: Yes, score=99\r\n"
    b"\ttests=FORGED\r\n"
    b"  more=folded\r\n"
    b"Subject: keep me\r\n"
    b"x-spam-status:   no, from an honest upstream\r\n"
    b"X-Spam-Flag: YES\r\n"
    b"\r\n"
)


def test_strip_headers_removes_folded_continuations() -> None:
    out = strip_headers(HEADERS, [HeaderRemoval("X-Spam-Status")])
    assert out == (
        b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Subject: keep me\r\n"
        b"X-Spam-Flag: YES\r\n"
        b"\r\n"
    )


def test_strip_headers_value_prefix_is_case_insensitive_and_narrow() -> None:
    out = strip_headers(HEADERS, [HeaderRemoval("x-spam-status", value_prefix="YES")])
    assert b"score=99" not in out
    assert b"tests=FORGED" not in out and b"more=folded" not in out
    assert b"x-spam-status:   no, from an honest upstream\r\n" in out
    assert out.endswith(b"X-Spam-Flag: YES\r\n\r\n")


def test_strip_headers_without_removals_is_identity() -> None:
    assert strip_headers(HEADERS, []) is HEADERS
    assert strip_headers(HEADERS, [HeaderRemoval("X-Not-There")]) == HEADERS


def test_build_final_touches_only_the_header_block() -> None:
    raw = b"Subject: s\r\nX-Spam-Flag: YES\r\n\r\nX-Spam-Flag: YES in the body stays\r\n.dot\r\n"
    end = raw.index(b"\r\n\r\n") + 4
    out = build_final(raw, end, [("X-Spam-Status", "No, score=0.0")], [HeaderRemoval("X-Spam-Flag")])
    assert out == b"X-Spam-Status: No, score=0.0\r\nSubject: s\r\n\r\nX-Spam-Flag: YES in the body stays\r\n.dot\r\n"
    assert build_final(raw, end, [], []) == raw


@pytest.mark.parametrize(
    "value",
    ["a\r\nBcc: victim@example.org", "a\nBcc: victim@example.org", "a\rBcc: victim@example.org",
     "a\r\n\r\nInjected body", "a\r\n.\r\nMAIL FROM:<x@y>"],
)
def test_format_header_refuses_header_injection(value: str) -> None:
    out = format_header("X-Test", value)
    lines = out.split(b"\r\n")
    assert lines[-1] == b""
    assert lines[0].startswith(b"X-Test: a")
    # Every further line is a continuation: no new field, no empty line (end of headers), no bare CR/LF.
    assert all(ln[:1] in (b" ", b"\t") for ln in lines[1:-1])
    assert b"\r\n\r\n" not in out
    assert not find_bare_newlines(out)


@pytest.mark.parametrize("name", ["X Test", "X:Test", "", "Bcc\r\nX", "X-Test\n", "X-Test\r\n", "Ümlaut", "X\x00"])
def test_format_header_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid header name"):
        format_header(name, "v")


def test_format_header_plain() -> None:
    assert format_header("X-Spam-Status", "No, score=0.0") == b"X-Spam-Status: No, score=0.0\r\n"
    assert format_header("X-Utf8", "grüße") == "X-Utf8: grüße\r\n".encode()


def test_received_header_facts() -> None:
    name, value = received_header(
        helo="mx.example.org", peer_ip="2001:db8::1", reverse_name=None, hostname="gate.example.edu",
        protocol="ESMTPSA", session_id="abc123", tls="using TLSv1.3 with cipher X", login="alice",
        recipient="bob@example.edu",
    )
    assert name == "Received"
    assert value.startswith("from mx.example.org (unknown [IPv6:2001:db8::1])")
    assert "(using TLSv1.3 with cipher X)" in value
    assert "(authenticated sender)" in value
    assert "by gate.example.edu (spamgate) with ESMTPSA id abc123" in value
    assert "for <bob@example.edu>" in value
    # The login name itself is not disclosed to the recipient.
    assert "alice" not in value
    assert format_header(name, value).count(b"\r\n") == value.count("\n") + 1
