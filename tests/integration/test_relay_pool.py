"""The backend pool against real Postfix: a pooled connection never carries one client's mail
under another's identity, and skipping XCLIENT for the same client still delivers everything.

Postfix names the client it was told about (XCLIENT) on its queue line,
``smtpd[PID]: QUEUEID: client=NAME[ADDR]``; the smtpd PID tells which backend connection
carried the message (one smtpd process per connection).
"""

from __future__ import annotations

import re
import smtplib
import uuid

from tests.integration.conftest import SpamgateFactory
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import send


def _msg(mid: str) -> bytes:
    return (f"From: <a@example.org>\r\nTo: <alice@example.edu>\r\nSubject: {mid}\r\n"
            f"Message-ID: <{mid}@example.org>\r\n\r\nhi\r\n").encode()


def _postfix_view(postfix: Postfix, mid: str) -> tuple[str, str, bytes]:
    """(smtpd PID, the client Postfix logged, Postfix's Received line) for the message ``mid``."""
    got = postfix.wait_for(lambda m: mid.encode() in m)
    qid = re.search(rb"\(Postfix\) with E?SMTP id (\w+)", got)
    assert qid is not None, got
    line = re.search(rf"smtpd\[(\d+)\]: {qid.group(1).decode()}: client=(\S+)", postfix.maillog())
    assert line is not None, postfix.maillog()[-2000:]
    received = got.split(b"\nReceived: ")[1].split(b"\n")[0]
    return line.group(1), line.group(2), received


def test_next_client_on_the_pooled_connection_is_identified_as_itself(
    postfix: Postfix, spamgate: SpamgateFactory
) -> None:
    sg = spamgate()
    seen = []
    for source, helo in (("127.0.0.5", "five.example.org"), ("127.0.0.6", "six.example.org")):
        mid = uuid.uuid4().hex
        res = send(sg.port, "a@example.org", ["alice@example.edu"], _msg(mid), helo=helo, source_address=source)
        assert res.delivered, res
        seen.append(_postfix_view(postfix, mid))
    (pid5, client5, rcvd5), (pid6, client6, rcvd6) = seen
    assert pid5 == pid6  # the same pooled backend connection ...
    assert (client5, client6) == ("unknown[127.0.0.5]", "unknown[127.0.0.6]")  # ... re-identified
    assert rcvd5.startswith(b"from five.example.org (unknown [127.0.0.5])"), rcvd5
    assert rcvd6.startswith(b"from six.example.org (unknown [127.0.0.6])"), rcvd6


def test_same_client_twice_on_one_connection_delivers_both(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mids = [uuid.uuid4().hex, uuid.uuid4().hex]
    smtp = smtplib.SMTP("127.0.0.1", sg.port, timeout=30, source_address=("127.0.0.7", 0))
    try:
        smtp.ehlo("seven.example.org")
        for mid in mids:  # the second message skips XCLIENT + EHLO: the backend knows this client
            assert smtp.sendmail("a@example.org", ["alice@example.edu"], _msg(mid)) == {}
    finally:
        smtp.quit()
    seen = [_postfix_view(postfix, mid) for mid in mids]
    assert seen[0][0] == seen[1][0]
    for _, client, received in seen:
        assert client == "unknown[127.0.0.7]"
        assert received.startswith(b"from seven.example.org (unknown [127.0.0.7])"), received
