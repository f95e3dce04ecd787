"""The headers filter through real SMTP: each forgery check fires on its crafted message, none on a clean one.

spamgate (hostname ``spamgate.test``, local domain ``example.edu``) relays into the
private Postfix; the verdict is read back from the X-Spam-Status header of the
delivered copy, or from the DATA reply for ``reject_symbols``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from spamgate.filters.headers.filter import DEFAULT_SCORES
from tests.integration.conftest import SpamgateFactory
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import send

pytestmark = pytest.mark.integration

# local_sender is on (local_domains is set); its From: check would refuse the FROM_LOCAL_UNAUTH
# sample before the headers filter could score it, and scoring is what these tests look at.
CONFIG = """
[filters.local_sender]
from_header = "off"

[filters.headers]
enabled = true
protected_names = ["Secretary", "Rector", "IT Helpdesk"]
max_received = 10
"""
NOW = datetime.now(UTC)


def clean(tag: str) -> dict[str, str]:
    """An ordered header set; a case edits it and ``render`` turns it into a message."""
    return {
        "Received": f"from mail.example.org by relay.example.org; {format_datetime(NOW)}",
        "From": "Alice Example <alice@example.org>",
        "To": "alice@example.edu",
        "Subject": f"case {tag}",
        "Date": format_datetime(NOW - timedelta(minutes=3)),
        "Message-ID": f"<{tag}@example.org>",
    }


def render(headers: dict[str, str], extra: list[str] | None = None, tag: str = "", top: str | None = None) -> bytes:
    lines = ([top] if top else []) + [f"{k}: {v}" for k, v in headers.items()] + (extra or [])
    body = f"X-Case-Tag {tag}\n"
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


def crafted(symbol: str, tag: str) -> bytes:
    h = clean(tag)
    extra: list[str] = []
    if symbol == "FROM_LOCAL_UNAUTH":
        h["From"] = "Professor <professor@example.edu>"
    elif symbol == "DISPLAY_NAME_ADDRESS_MISMATCH":
        h["From"] = '"rector@example.edu" <x@evil.test>'
    elif symbol == "DISPLAY_NAME_PROTECTED":
        h["From"] = "IT Helpdesk <support@evil.test>"
    elif symbol == "REPLYTO_FOREIGN_LOCAL_FROM":
        extra = ["From: secr@example.edu", "Reply-To: secr.office@evil.test"]
        del h["From"]
    elif symbol == "RECEIVED_FORGED_LOCAL":
        # the forged line on top, above the sender's own (honest) Received
        return render(h, tag=tag, top=f"Received: from trusted.example.edu by spamgate.test; {format_datetime(NOW)}")
    elif symbol == "RECEIVED_TOO_MANY":
        extra = [f"Received: from h{i}.test by h{i + 1}.test; {format_datetime(NOW)}" for i in range(12)]
    elif symbol.startswith("MISSING_"):
        del h[{"FROM": "From", "DATE": "Date", "SUBJECT": "Subject", "MESSAGE_ID": "Message-ID"}[symbol[8:]]]
    elif symbol.startswith("MULTIPLE_"):
        name = {"FROM": "From", "DATE": "Date", "SUBJECT": "Subject"}[symbol[9:]]
        extra = [f"{name}: {h[name]}"]
    elif symbol == "DATE_INVALID":
        h["Date"] = "sometime last week"
    elif symbol == "DATE_IN_FUTURE":
        h["Date"] = format_datetime(NOW + timedelta(days=5))
    elif symbol == "DATE_IN_PAST":
        h["Date"] = format_datetime(NOW - timedelta(days=90))
    elif symbol == "MALFORMED_ADDRESS_HEADER":
        h["To"] = "alice@example.edu, <broken@"
    elif symbol == "HEADER_8BIT_NO_SMTPUTF8":
        h["Subject"] = f"Grüße {tag}"
    elif symbol == "HEADER_NO_COLON":
        extra = ["this line has no colon at all"]
    elif symbol == "HEADER_LINE_TOO_LONG":
        extra = ["X-Padding: " + "x" * 1100]
    else:
        raise AssertionError(f"no crafted case for {symbol}")
    return render(h, extra, tag)


def header_symbols(status: str) -> set[str]:
    return {s for s in re.findall(r"([A-Z0-9_]+)\(", status) if s in DEFAULT_SCORES}


def x_spam_status(raw: bytes) -> str:
    head = raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    m = re.search(r"^X-Spam-Status: (.*(?:\n[ \t].*)*)", head, re.MULTILINE)
    assert m, head
    return " ".join(m.group(1).split())


def deliver(sg_port: int, postfix: Postfix, raw: bytes, tag: str) -> str:
    res = send(sg_port, "sender@example.org", ["alice@example.edu"], raw)
    assert res.delivered, res
    return x_spam_status(postfix.wait_for(lambda m: tag.encode() in m))


def test_each_check_fires_on_its_message_and_none_on_a_clean_one(
    spamgate: SpamgateFactory, postfix: Postfix
) -> None:
    sg = spamgate(CONFIG)
    tag = uuid.uuid4().hex
    assert header_symbols(deliver(sg.port, postfix, render(clean(tag), tag=tag), tag)) == set()
    for symbol in sorted(DEFAULT_SCORES):
        tag = f"{symbol}-{uuid.uuid4().hex}"
        status = deliver(sg.port, postfix, crafted(symbol, tag), tag)
        assert symbol in header_symbols(status), (symbol, status)
        assert f"{symbol}({DEFAULT_SCORES[symbol]:.1f})" in status


def test_reject_symbols_and_scores_from_config(spamgate: SpamgateFactory, postfix: Postfix) -> None:
    sg = spamgate(CONFIG + 'reject_symbols = ["DISPLAY_NAME_ADDRESS_MISMATCH"]\nscores = { MISSING_DATE = 4.5 }\n')
    tag = f"reject-{uuid.uuid4().hex}"
    res = send(sg.port, "x@evil.test", ["alice@example.edu"], crafted("DISPLAY_NAME_ADDRESS_MISMATCH", tag))
    assert res.data is not None and res.data[0] == 550, res
    assert "5.7.1" in res.data[1] and "DISPLAY_NAME_ADDRESS_MISMATCH" in res.data[1]
    assert not any(tag.encode() in m for m in postfix.messages())
    tag = f"score-{uuid.uuid4().hex}"
    assert "MISSING_DATE(4.5)" in deliver(sg.port, postfix, crafted("MISSING_DATE", tag), tag)
