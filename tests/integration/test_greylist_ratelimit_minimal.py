"""greylist and ratelimit from minimal configs, one instance, the embedded in-memory store."""

from __future__ import annotations

import smtplib
import time

from tests.integration.conftest import SpamgateFactory
from tests.integration.services.postfix import Postfix, free_port


def _dns() -> str:
    # Nothing listens there: SPF lookups are refused at once, nothing reaches a real resolver.
    return f'[dns]\nreverse_lookup = false\nnameservers = ["127.0.0.1"]\nport = {free_port()}\n'


def test_greylist_minimal(spamgate: SpamgateFactory, postfix: Postfix) -> None:
    sg = spamgate(_dns() + "[filters.greylist]\nenabled = true\ndelay = 1\n")
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=20) as smtp:
        smtp.ehlo("client.example.org")
        smtp.mail("someone@sender.example")
        code, msg = smtp.rcpt("carol@example.edu")
        assert code == 451 and msg.startswith(b"4.7.1 Greylisted, please try again in 1 seconds")
    time.sleep(1.1)
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=20) as smtp:
        smtp.sendmail("someone@sender.example", ["carol@example.edu"], b"Subject: grey-min\r\n\r\nhi\r\n")
    postfix.wait_for(lambda m: b"grey-min" in m, rcpt="carol@example.edu")


def test_ratelimit_minimal(spamgate: SpamgateFactory) -> None:
    sg = spamgate(_dns() + "[filters.ratelimit]\nenabled = true\nip_recipients_per_hour = 2\n")
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=20) as smtp:
        smtp.ehlo("client.example.org")
        smtp.mail("someone@sender.example")
        codes = [smtp.rcpt(f"{u}@example.edu")[0] for u in ("alice", "bob", "carol")]
    assert codes == [250, 250, 451]
    assert "limit=ip_recipients_per_hour" in sg.log()


def test_penalty_box_counts_the_backends_and_the_engines_refusals_minimal(spamgate: SpamgateFactory) -> None:
    # Nothing here is refused by ratelimit itself: Postfix's unknown users and the engine's relay check fill the box.
    sg = spamgate(_dns() + "[filters.ratelimit]\nenabled = true\npenalty_after = 3\n")
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=20) as smtp:
        smtp.ehlo("client.example.org")
        smtp.mail("someone@sender.example")
        codes = [smtp.rcpt(r)[0] for r in ("nobody1@example.edu", "victim@elsewhere.example", "alice@example.edu")]
    assert codes == [550, 554, 250]  # two refusals, and a good recipient is still taken
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=20) as smtp:
        smtp.ehlo("client.example.org")
        smtp.mail("someone@sender.example")
        assert smtp.rcpt("nobody2@example.edu")[0] == 550  # the third
    deadline = time.monotonic() + 5  # the refusal is counted after its reply, in the background
    while "penalty-box client=127.0.0.1 rejections=3" not in sg.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=20) as smtp:
        code, msg = smtp.ehlo("client.example.org")  # the connect verdict, answered at the first command
    assert (code, msg) == (421, b"4.7.0 Too many rejected commands, try again later"), sg.log()
    assert "ratelimit limit=penalty_box client=127.0.0.1" in sg.log()
