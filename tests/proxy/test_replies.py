"""Reply texts spamgate sends itself and the enhanced-status-code normaliser for aiosmtpd's replies."""

from __future__ import annotations

import re

import pytest

from spamgate.filters.sdk.api import Reply
from spamgate.proxy import replies
from spamgate.proxy.replies import enhance, format_multiline

ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ("500 Command line too long", "500 5.5.2 Command line too long"),
        ("500 Line too long (see RFC5321 4.5.3.1.6)", "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)"),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("502 Command not implemented", "502 5.5.1 Command not implemented"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        ("552 Error: Too much mail data", "552 5.3.4 Error: Too much mail data"),
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("421 closing", "421 4.0.0 closing"),
        ("599 odd", "599 5.5.2 odd"),
    ],
)
def test_enhance_adds_codes(line: str, expected: str) -> None:
    out = enhance(line)
    assert out == expected
    assert ENHANCED.match(out.split()[1])
    assert out[0] == out.split()[1][0]


@pytest.mark.parametrize(
    "line",
    [
        "220 mx.example.edu ESMTP spamgate",  # greeting: RFC 2034 says no code
        "354 End data with <CR><LF>.<CR><LF>",
        "334 VXNlcm5hbWU6",
        "250 2.1.0 Ok",
        "550 5.1.1 <nobody@example.edu>: Recipient address rejected: User unknown",
        "451 4.3.0 Internal error",
        "",
        "xyz",
        "25",
        "250",
        "2500 nope",
    ],
)
def test_enhance_leaves_alone(line: str) -> None:
    assert enhance(line) == line


def test_enhance_is_idempotent() -> None:
    for line in ("500 Error: bad syntax", "250 OK", "552 Error: Too much mail data"):
        assert enhance(enhance(line)) == enhance(line)


def test_format_multiline() -> None:
    assert format_multiline(250, "2.0.0 Ok: queued as 4F2B1C0A3") == ["250 2.0.0 Ok: queued as 4F2B1C0A3"]
    assert format_multiline(550, "5.7.1 first\n5.7.1 second\n5.7.1 third") == [
        "550-5.7.1 first",
        "550-5.7.1 second",
        "550 5.7.1 third",
    ]
    assert format_multiline(451, "") == ["451"]


def test_own_replies_are_well_formed() -> None:
    own = [v for v in vars(replies).values() if isinstance(v, Reply)]
    assert len(own) >= 10
    for r in own:
        assert ENHANCED.match(r.enhanced), r
        assert str(r)[0] == r.enhanced[0], r
        assert enhance(str(r)) == str(r)


def test_contract_replies() -> None:
    assert str(replies.INTERNAL_ERROR).startswith("451 4.3.0 ")
    assert replies.BACKEND_UNAVAILABLE.code // 100 == 4
    assert replies.BACKEND_TIMEOUT.code // 100 == 4
    assert str(replies.BARE_NEWLINE).startswith("554 5.6.0 ")
    assert replies.BAD_ADDRESS.code == 501
    assert replies.TOO_MANY_RECIPIENTS.code == 452
    assert replies.TOO_MANY_FROM_IP.code == 421
    assert replies.TOO_MANY_ERRORS.code == 421
