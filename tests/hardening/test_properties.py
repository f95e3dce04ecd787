"""Property-based tests (hypothesis) on the entry points hostile input reaches first.

The command-line parser and the DATA path are exercised through a real spamgate process
(the parser is aiosmtpd's, driven by GateSMTP); the pure parsers (addresses, headers,
base64 for AUTH, the relay's DATA encoding) are called directly.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import Iterator
from email.errors import HeaderParseError
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spamgate.filters.sdk.api import HeaderRemoval
from spamgate.proxy.message import _header_fields, canonicalize, format_header, strip_headers
from spamgate.proxy.relay_data import dot_stuff, wire_message
from spamgate.proxy.smtp import GateSMTP
from spamgate.proxy.smtp_auth import AuthMixin
from tests.hardening.live import running_spamgate
from tests.hardening.sink import CountingSink
from tests.integration.conftest import Spamgate
from tests.integration.smtp_client import RawClient

LIVE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PURE = settings(max_examples=200, deadline=None)

# -- a real spamgate for the wire-level properties ------------------------------------------


@pytest.fixture(scope="module")
def maildir_gate() -> Iterator[Spamgate]:
    with running_spamgate('url = "maildir:md"', "[limits]\nmax_errors = 1000000\n") as sg:
        yield sg


@pytest.fixture(scope="module")
def sink() -> Iterator[CountingSink]:
    s = CountingSink(keep_raw=True)
    yield s
    s.close()


@pytest.fixture(scope="module")
def relay_gate(sink: CountingSink) -> Iterator[Spamgate]:
    with running_spamgate(f'host = "127.0.0.1"\nport = {sink.port}\ntimeout = 10\n') as sg:
        yield sg


def _session(port: int) -> RawClient:
    c = RawClient(port, timeout=10)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO prop.test")[0] == 250
    return c


# Any command line: printable and control bytes, never CR or LF (those end the line). PROXY is the
# one command that ends a session on purpose: a PROXY header from a client that is not a trusted
# balancer gets 554 and the connection is closed (tests/integration/test_scale_out.py).
command_lines = st.binary(max_size=600).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")).filter(
    lambda b: not b.upper().startswith((b"QUIT", b"DATA", b"AUTH", b"STARTTLS", b"BDAT")) or len(b) > 8
).filter(lambda b: not b.strip().upper().startswith(b"PROXY"))


@pytest.mark.integration
@LIVE
@given(line=command_lines)
def test_any_command_line_gets_one_clean_reply_and_the_session_survives(maildir_gate: Spamgate, line: bytes) -> None:
    c = _session(maildir_gate.port)
    try:
        c.send(line + b"\r\n")
        code, text = c.reply()
        assert 200 <= code < 600, (line, code, text)
        # Never aiosmtpd's "500 Error: (ExceptionName) text": a bug answers 451 4.3.0 and is logged.
        assert not text.startswith("Error: ("), (line, text)
        assert code != 451 or "Internal error" not in text, (line, text, maildir_gate.log()[-2000:])
        # The next command is still understood: the parser is in step with the client.
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()
    assert "Traceback" not in maildir_gate.log()


def _stuff(data: bytes) -> bytes:
    """A correct client's dot-stuffing: only lines that begin after a CRLF (RFC 5321 4.5.2)."""
    return re.sub(rb"(?<=\r\n)\.", b"..", data)


# Bodies made of short lines with every kind of line ending, dots, NULs and 8-bit bytes.
_line = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_ending = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n.", b"\n.", b"\r.", b"\r\n..", b".\r\n"])
bodies = st.lists(st.tuples(_line, _ending), max_size=30).map(lambda parts: b"".join(a + b for a, b in parts))


def _headers(mid: str) -> bytes:
    return f"From: p@example.org\r\nTo: alice@example.edu\r\nMessage-ID: <{mid}@load.test>\r\n\r\n".encode()


@pytest.mark.integration
@LIVE
@given(body=bodies)
def test_data_round_trips_exactly_through_the_relay(relay_gate: Spamgate, sink: CountingSink, body: bytes) -> None:
    """client -> spamgate's DATA reader -> canonicalize -> the relay's DATA encoding -> backend:
    the backend gets the canonical (CRLF) form of exactly the bytes the client meant."""
    mid = uuid.uuid4().hex
    content = _headers(mid) + body
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    c = _session(relay_gate.port)
    try:
        assert c.cmd("MAIL FROM:<p@example.org>")[0] == 250
        assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(_stuff(b"\r\n" + content)[2:] + b".\r\n")
        code, text = c.reply()
        assert code == 250, (code, text)
    finally:
        c.close()
    got = sink.raw[mid]
    want = canonicalize(content)
    # Our own trace and spam headers go on top; everything the client sent follows unchanged.
    assert got.endswith(want), (got, want)
    assert got.count(b"\n") == got.count(b"\r\n") == got.count(b"\r")


@PURE
@given(data=st.binary(max_size=2000))
def test_relay_encoding_round_trips(data: bytes) -> None:
    """The relay's DATA encoding (``proxy/relay_data.py``), un-stuffed as the backend does, is
    exactly spamgate's canonical form: nothing can end the DATA early or change a byte. (BDAT
    sends ``wire_message(canonical)`` as counted bytes: nothing in it can end anything.)"""
    canonical = canonicalize(data)
    assert wire_message(canonical) == (canonical or b"\r\n")
    wire = dot_stuff(wire_message(canonical))
    assert b"\r\n.\r\n" not in b"\r\n" + wire
    lines = wire.split(b"\r\n")
    unstuffed = b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)
    assert unstuffed == (canonical or b"\r\n")
    # Canonical means: CR and LF only as CRLF, and idempotent.
    assert canonical.count(b"\r") == canonical.count(b"\n") == canonical.count(b"\r\n")
    assert canonicalize(canonical) == canonical


# -- addresses -------------------------------------------------------------------------------

_atom = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
_label = st.text(alphabet="abcxyz0189-", min_size=1, max_size=8)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)
_plain = st.builds(lambda loc, dom: f"{loc}@{dom}", st.lists(_atom, min_size=1, max_size=3).map(".".join), _domain)
_rest = st.sampled_from(["", " SIZE=100", " BODY=8BITMIME", "  SMTPUTF8", "x", ">", " <a@b>"])
_noise = st.text(alphabet='<>@."\\ ()[]:,;abc', max_size=20)
mail_args = st.one_of(
    st.builds(lambda a, r: f"<{a}>{r}", _plain, _rest),
    st.builds(lambda a, n: f"<{a}{n}", _plain, _noise),
    st.builds(lambda n, a: f"{n}<{a}>", _noise, _plain),
    _noise,
)


def _bare_gate() -> Any:
    # _getaddr uses no instance state: an uninitialised GateSMTP is enough (no loop, no runtime).
    return object.__new__(GateSMTP)


@PURE
@given(arg=mail_args)
@example(arg="<")
@example(arg="<@")
@example(arg="<a@[")
@example(arg="<a@[a@x>")
@example(arg='"q" @[ ')
@example(arg="<a@b.c> SIZE=1")
@example(arg="<0@0>(")
@example(arg="<a@b.c> (comment) SIZE=1")
@example(arg="<a@b.c>\u2000SIZE=1")
def test_fast_address_path_agrees_with_aiosmtpd(arg: str) -> None:
    reference: Any = object.__new__(SMTP)
    try:
        expected = SMTP._getaddr(reference, arg)
    except (IndexError, AttributeError, UnboundLocalError, HeaderParseError):
        # email's parser crashes on some truncated addresses; GateSMTP calls that a syntax error.
        expected = (None, None)
    assert GateSMTP._getaddr(_bare_gate(), arg) == expected


# -- headers -------------------------------------------------------------------------------

header_names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"),
                       min_size=1, max_size=20)
header_values = st.text(max_size=200).filter(lambda v: "\x00" not in v)


@PURE
@given(name=header_names, value=header_values)
def test_a_formatted_header_is_exactly_one_field(name: str, value: str) -> None:
    """No value (CR, LF, folds, 8-bit) can inject a second header field."""
    raw = format_header(name, value)
    fields = _header_fields(raw)
    assert [f[0] for f in fields] == [name]
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == raw.count(b"\n") == raw.count(b"\r")


blocks = st.lists(st.tuples(header_names, header_values), max_size=8)


@PURE
@given(fields=blocks, victim=header_names)
def test_strip_headers_removes_every_copy_and_keeps_the_rest(fields: list[tuple[str, str]], victim: str) -> None:
    block = b"".join(format_header(n, v) for n, v in fields) + b"\r\n"
    out = strip_headers(block, [HeaderRemoval(victim)])
    kept = [f[0] for f in _header_fields(out)]
    assert all(n.lower() != victim.lower() for n in kept)
    assert kept == [n for n, _ in fields if n.lower() != victim.lower()]
    assert out.endswith(b"\r\n\r\n") or out == b"\r\n"
    assert strip_headers(block, []) == block


def _strip_every_field(header_bytes: bytes, removals: list[HeaderRemoval]) -> bytes:
    """strip_headers without its shortcut: every field parsed and asked."""
    kept = [raw for name, value, raw in _header_fields(header_bytes)
            if not any(r.matches(name, value) for r in removals)]  # fmt: skip
    trailer = b"\r\n" if header_bytes.endswith(b"\r\n\r\n") or header_bytes == b"\r\n" else b""
    return b"".join(kept) + trailer


removal_names = st.one_of(header_names, st.sampled_from(["X-Spam-Status", "x-spam-flag", "Authentication-Results",
                                                         "X-\u00c0b", "SUBJECT"]))  # fmt: skip


raw_lines = st.lists(st.binary(min_size=1, max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b), max_size=3)


@PURE
@given(fields=blocks, raw_tail=raw_lines,
       removals=st.lists(st.builds(HeaderRemoval, removal_names, st.one_of(st.none(), st.text(max_size=6))),
                         min_size=1, max_size=3))  # fmt: skip
def test_strip_headers_shortcut_changes_nothing(fields: list[tuple[str, str]], raw_tail: list[bytes],
                                                removals: list[HeaderRemoval]) -> None:
    """Skipping the parse when no removed name occurs in the block gives what parsing every field gives,
    for any header block (raw 8-bit lines too) and any removal (prefixes, case, a non-ASCII name)."""
    block = b"".join(format_header(n, v) for n, v in fields) + b"".join(x + b"\r\n" for x in raw_tail) + b"\r\n"
    assert strip_headers(block, removals) == _strip_every_field(block, removals)


# -- AUTH ----------------------------------------------------------------------------------


class _AuthStub:
    """Just what AuthMixin's decoder and PLAIN splitter touch."""

    def __init__(self) -> None:
        self.pushed: list[str] = []
        self.logins: list[tuple[str, bytes, bytes]] = []

    async def push(self, status: str) -> None:
        self.pushed.append(status)

    async def _auth_allowed(self) -> bool:
        return True

    async def _b64(self, value: str) -> bytes | None:
        return await AuthMixin._b64(self, value)  # type: ignore[arg-type]

    async def _login(self, mechanism: str, login: bytes, password: bytes) -> str:
        self.logins.append((mechanism, login, password))
        return "login"


@PURE
@given(secret=st.binary(max_size=300))
def test_auth_base64_round_trips(secret: bytes) -> None:
    stub = _AuthStub()
    assert asyncio.run(AuthMixin._b64(stub, base64.b64encode(secret).decode())) == secret  # type: ignore[arg-type]
    assert stub.pushed == []


@PURE
@given(text=st.text(max_size=200))
def test_auth_base64_garbage_gets_501_never_an_exception(text: str) -> None:
    stub = _AuthStub()
    got = asyncio.run(AuthMixin._b64(stub, text))  # type: ignore[arg-type]
    if got is None:
        assert stub.pushed == ["501 5.5.2 Cannot decode base64"]
    else:
        assert stub.pushed == [] and base64.b64decode(text, validate=True) == got


@PURE
@given(blob=st.binary(max_size=200))
def test_auth_plain_splits_into_three_or_answers_501(blob: bytes) -> None:
    stub = _AuthStub()
    asyncio.run(AuthMixin.auth_PLAIN(stub, ["PLAIN", base64.b64encode(blob).decode()]))  # type: ignore[arg-type]
    parts = blob.split(b"\x00")
    if len(parts) == 3:
        assert stub.logins == [("PLAIN", parts[1], parts[2])] and stub.pushed == []
    else:
        assert stub.logins == [] and stub.pushed == ["501 5.5.2 Cannot split PLAIN credentials"]
