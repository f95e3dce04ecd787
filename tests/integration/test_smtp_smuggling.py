"""SMTP smuggling (SEC Consult, Dec 2023) through real spamgate in front of a real Postfix.

The Postfix here (3.7) has no smtpd_forbid_bare_newline by default, so it would itself end
DATA on ``<LF>.<CR><LF>``: spamgate is the only thing standing between the attack and a
second, forged message. A wire recorder between the two shows exactly what Postfix gets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.integration.conftest import SpamgateFactory
from tests.integration.protocol_support import (
    WireRecorder,
    body_of,
    close_clients,
    count_with,
    delivered_form,
    headers,
    new_id,
    session,
    transaction,
)
from tests.integration.services.postfix import Postfix, running_postfix
from tests.smuggling import ALL_VARIANTS, BARE_NEWLINE_VARIANTS


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_clients()


@pytest.fixture
def recorder(postfix: Postfix) -> Iterator[WireRecorder]:
    rec = WireRecorder(postfix.port)
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def postfix_without_chunking() -> Iterator[Postfix]:
    """A Postfix that does not offer CHUNKING: spamgate sends DATA with dot-stuffing to it."""
    with running_postfix("smtpd_discard_ehlo_keywords = chunking\n") as pf:
        yield pf


@pytest.fixture(params=["bdat", "data"])
def wired(request: pytest.FixtureRequest, postfix: Postfix) -> Iterator[tuple[str, Postfix, WireRecorder]]:
    """(how the message goes, the Postfix it goes to, a recorder in between): Postfix 3.7 offers CHUNKING."""
    pf = postfix if request.param == "bdat" else request.getfixturevalue("postfix_without_chunking")
    rec = WireRecorder(pf.port)
    yield request.param, pf, rec
    rec.close()


def _payload(mid: str, seq: bytes) -> bytes:
    """A first message whose body carries a smuggled end-of-data and a whole second transaction."""
    return (
        headers(mid) + b"first part" + seq
        + b"MAIL FROM:<ceo@example.edu>\r\nRCPT TO:<carol@example.edu>\r\nDATA\r\n"
        + f"From: ceo@example.edu\r\nSubject: SMUGGLED {mid}\r\n\r\nwire the money\r\n".encode()
    )


def _backend_data(wire: bytes) -> list[bytes]:
    """The DATA payloads (without the final dot line) spamgate sent to the backend."""
    return [m.group(1) for m in re.finditer(rb"\r\nDATA\r\n(.*?\r\n)\.\r\n", wire, re.S)]


def _backend_chunks(wire: bytes) -> list[bytes]:
    """The BDAT payloads: exactly the announced number of bytes after each ``BDAT <n> LAST`` line."""
    out, pos = [], 0
    while m := re.compile(rb"\r\nBDAT (\d+) LAST\r\n").search(wire, pos):
        pos = m.end() + int(m.group(1))
        out.append(wire[m.end() : pos])
    return out


def test_smuggling_variants_normalized(wired: tuple[str, Postfix, WireRecorder], spamgate: SpamgateFactory) -> None:
    mode, postfix, recorder = wired
    sg = spamgate(backend_toml=f'host = "127.0.0.1"\nport = {recorder.port}\ntimeout = 30\n')
    sent: dict[str, tuple[str, bytes]] = {}
    c = session(sg.port)
    for name, seq in ALL_VARIANTS.items():
        mid = f"{new_id()}-{name}"
        wire = _payload(mid, seq)
        code, text = transaction(c, "sender@example.org", ["alice@example.edu"], wire)
        assert code == 250 and "queued as" in text, (name, code, text)
        sent[name] = (mid, wire)
    assert c.cmd("QUIT")[0] == 221

    for name, (mid, wire) in sent.items():
        got = postfix.wait_for(lambda m, mid=mid: mid.encode() in m)  # type: ignore[misc]
        # One message, holding the smuggled commands as ordinary body lines.
        assert count_with(postfix, mid.encode()) == 1, name
        assert body_of(got) == body_of(delivered_form(wire)), name
        assert f"SMUGGLED {mid}".encode() in body_of(got)
    # Nothing reached the smuggled recipient.
    assert not any(b"SMUGGLED" in m for m in postfix.messages("carol@example.edu"))
    assert "ceo@example.edu" not in postfix.maillog()

    # On the wire to Postfix: one DATA (dot-stuffed) or one BDAT (counted, never stuffed) per message,
    # canonical CRLF either way.
    wire = recorder.sent()
    payloads = _backend_data(wire) if mode == "data" else _backend_chunks(wire)
    assert len(payloads) == len(ALL_VARIANTS)
    after_rcpt = b"\r\nRCPT TO:<alice@example.edu>\r\n" + (b"BDAT " if mode == "bdat" else b"DATA\r\n")
    assert wire.count(after_rcpt) == len(ALL_VARIANTS)
    for data in payloads:
        assert data.count(b"\n") == data.count(b"\r\n") and data.count(b"\r") == data.count(b"\r\n")
        if mode == "data":
            assert b"\r\n.\r\n" not in data
        assert b"\r\nMAIL FROM:<ceo@example.edu>\r\n" in data
    by_name = {name: next(p for p in payloads if mid.encode() in p) for name, (mid, _) in sent.items()}
    # A dot between bare line endings arrives as a harmless ".." line in DATA, a plain "." line in BDAT.
    dot_line = b"..\r\n" if mode == "data" else b".\r\n"
    for name in ("lf_dot_lf", "lf_dot_crlf", "cr_dot_cr", "cr_dot_crlf", "lf_dot_cr", "cr_dot_lf"):
        assert b"first part\r\n" + dot_line + b"MAIL FROM:" in by_name[name], name
    # After a real CRLF the dot was the client's stuffing dot and is removed (RFC 5321 4.5.2).
    assert b"first part\r\n\r\nMAIL FROM:" in by_name["crlf_dot_cr"]
    assert b"first part\r\n\r\nMAIL FROM:" in by_name["crlf_dot_lf"]
    assert b"first part\r\n\x00.\r\nMAIL FROM:" in by_name["crlf_nul_dot_crlf"]


@pytest.mark.parametrize("name", list(BARE_NEWLINE_VARIANTS))
def test_smuggling_rejected_in_reject_mode(name: str, postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate('[limits]\nbare_newline = "reject"\n')
    mid = new_id()
    c = session(sg.port)
    code, text = transaction(c, "sender@example.org", ["alice@example.edu"], _payload(mid, BARE_NEWLINE_VARIANTS[name]))
    assert code == 554 and text.startswith("5.6.0 "), (code, text)
    # The session survives and a clean message goes through, so "nothing delivered" is not a race.
    fence = new_id()
    assert transaction(c, "sender@example.org", ["alice@example.edu"], headers(fence) + b"clean\r\n")[0] == 250
    postfix.wait_for(lambda m: fence.encode() in m)
    assert count_with(postfix, mid.encode()) == 0
    assert not any(mid.encode() in m for m in postfix.messages("carol@example.edu"))
    assert mid not in postfix.maillog()


def test_reject_mode_accepts_clean_crlf_and_nul_lines(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate('[limits]\nbare_newline = "reject"\n')
    mid = new_id()
    wire = _payload(mid, ALL_VARIANTS["crlf_nul_dot_crlf"])
    c = session(sg.port)
    assert transaction(c, "sender@example.org", ["alice@example.edu"], wire)[0] == 250
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert body_of(got) == body_of(delivered_form(wire))


def test_reject_aborts_the_backend_transaction(spamgate: SpamgateFactory, recorder: WireRecorder) -> None:
    sg = spamgate('[limits]\nbare_newline = "reject"\n',
                  backend_toml=f'host = "127.0.0.1"\nport = {recorder.port}\ntimeout = 30\n')
    c = session(sg.port)
    code, _ = transaction(c, "sender@example.org", ["alice@example.edu"], _payload(new_id(), b"\n.\n"))
    assert code == 554
    assert c.cmd("NOOP")[0] == 250
    wire = recorder.sent()
    # spamgate's refusal is an RSET to the backend, never a completed DATA.
    assert b"RCPT TO:<alice@example.edu>\r\nRSET\r\n" in wire
    assert b"DATA" not in wire
