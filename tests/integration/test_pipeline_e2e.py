"""The filter pipeline on real SMTP traffic through real spamgate and real Postfix.

Uses the example third-party plugin (tests/plugin_example), installed into the test
environment: one filter rejects at RCPT, tempfails at DATA and adds a header, one
raises, one hangs.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from tests.integration.conftest import SpamgateFactory
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import send
from tests.plugin_support import ensure_example_plugin

FILTERS = """
[filters.example_keyword]
enabled = true
order = 10
reject_recipients = ["bob@example.edu"]
spam_score = 5.0

[filters.example_crash]
enabled = true
order = 20
on_error = "{crash_on_error}"

[filters.example_hang]
enabled = true
order = 30
timeout = 1.0

[actions]
reject = 15.0
add_header = 4.0
"""


@pytest.fixture(scope="module", autouse=True)
def _plugin() -> None:
    ensure_example_plugin()


def _msg(mid: str, body: str) -> bytes:
    return (
        f"From: <sender@example.org>\r\nTo: <alice@example.edu>\r\nSubject: {mid}\r\n"
        f"Message-ID: <{mid}@example.org>\r\n\r\n{body}\r\n"
    ).encode()


def _count(postfix: Postfix, mid: str, rcpt: str = "alice@example.edu") -> int:
    return sum(1 for m in postfix.messages(rcpt) if mid.encode() in m)


def test_every_outcome_is_what_the_config_says(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate(FILTERS.format(crash_on_error="continue"))

    # RCPT reject applies to that recipient only; crash and hang are contained (continue).
    mid = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["bob@example.edu", "alice@example.edu"], _msg(mid, "hello"))
    assert res.rcpt[0] == (550, "5.7.1 <bob@example.edu>: refused by example filter")
    assert res.rcpt[1][0] == 250
    assert res.data is not None and res.data[0] == 250 and "queued as" in res.data[1]
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert b"X-Example-Filter: checked by example_keyword" in got
    assert b"EXAMPLE_CRASH_ERROR(0.0)" in got and b"EXAMPLE_HANG_ERROR(0.0)" in got
    assert b"X-Spam-Status: No, score=0.0" in got
    assert _count(postfix, mid, "bob@example.edu") == 0

    # A DATA tempfail reaches the client and nothing is delivered.
    mid2 = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["alice@example.edu"], _msg(mid2, "please TEMPFAIL-ME now"))
    assert res.data == (451, "4.7.1 Example filter says: try again later")

    # A scored symbol over add_header tags the message and explains why.
    mid3 = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["alice@example.edu"], _msg(mid3, "cheap VIAGRA here"))
    assert res.data is not None and res.data[0] == 250
    got3 = postfix.wait_for(lambda m: mid3.encode() in m)
    assert b"X-Spam-Flag: YES" in got3
    assert b"X-Spam-Status: Yes, score=5.0 required=4.0 tests=EXAMPLE_SPAM_WORD(5.0)" in got3

    time.sleep(1.0)
    assert _count(postfix, mid2) == 0
    assert _count(postfix, mid) == 1 and _count(postfix, mid3) == 1
    log = sg.log()
    # A crash is a bug: logged with its traceback, once per outage (not once per message).
    assert "dependency=filter:example_crash state=down error=RuntimeError: example_crash always crashes" in log
    assert "Traceback" in log
    assert "dependency=filter:example_hang state=down error=timeout after" in log


def test_on_error_tempfail_keeps_the_mail_with_the_sender(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate(FILTERS.format(crash_on_error="tempfail"))
    mid = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["alice@example.edu"], _msg(mid, "hello"))
    assert res.data is not None and res.data[0] == 451
    time.sleep(1.0)
    assert _count(postfix, mid) == 0


def test_observe_mode_logs_and_marks_but_does_not_enforce(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate(
        '[filters.example_keyword]\nenabled = true\nmode = "observe"\nreject_recipients = ["bob@example.edu"]\n'
    )
    mid = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["bob@example.edu"], _msg(mid, "hello"))
    assert res.rcpt == [(250, "2.1.5 Ok")]
    got = postfix.wait_for(lambda m: mid.encode() in m, rcpt="bob@example.edu")
    assert b"X-Spamgate-Observe: example_keyword would reject at rcpt: 550 5.7.1 <bob@example.edu>" in got
    assert "filter=example_keyword phase=rcpt observe=would-reject" in sg.log()
    metrics = subprocess.run(
        [sys.executable, "-c", f"import urllib.request;print(urllib.request.urlopen("
         f"'http://127.0.0.1:{sg.metrics_port}/metrics').read().decode())"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert 'spamgate_filter_observed_total{decision="reject",filter="example_keyword"} 1.0' in metrics


def test_quarantine_stores_and_release_delivers(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate(
        '[filters.example_keyword]\nenabled = true\nspam_score = 8.0\n'
        "[actions]\nreject = 15.0\nquarantine = 7.0\nadd_header = 4.0\n"
    )
    mid = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["alice@example.edu"], _msg(mid, "VIAGRA"))
    assert res.data is not None and res.data[0] == 250 and "quarantined as" in res.data[1]
    qid = res.data[1].rsplit(" ", 1)[1]
    time.sleep(0.5)
    assert _count(postfix, mid) == 0
    cli = [sys.executable, "-m", "spamgate.proxy", "quarantine"]
    listing = subprocess.run([*cli, "list", "--config", str(sg.config_path)], capture_output=True, text=True)
    assert qid in listing.stdout and "EXAMPLE_SPAM_WORD" in listing.stdout
    shown = subprocess.run([*cli, "show", qid, "--config", str(sg.config_path)], capture_output=True, text=True)
    assert mid in shown.stdout and '"score": 8.0' in shown.stdout
    rel = subprocess.run([*cli, "release", qid, "--config", str(sg.config_path)], capture_output=True, text=True)
    assert rel.returncode == 0, rel.stderr
    got = postfix.wait_for(lambda m: mid.encode() in m)
    assert b"X-Spam-Status: Yes, score=8.0" in got
    again = subprocess.run([*cli, "show", qid, "--config", str(sg.config_path)], capture_output=True, text=True)
    assert again.returncode == 1


def test_quarantine_failure_tempfails_instead_of_accepting(
    postfix: Postfix, spamgate: SpamgateFactory, tmp_path: object
) -> None:
    sg = spamgate(
        '[pipeline]\nquarantine_dir = "/dev/null/quarantine"\n'
        '[filters.example_keyword]\nenabled = true\nspam_score = 8.0\n'
        "[actions]\nreject = 15.0\nquarantine = 7.0\n"
    )
    mid = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["alice@example.edu"], _msg(mid, "VIAGRA"))
    assert res.data == (451, "4.3.1 Insufficient system storage, please try again later")
    time.sleep(0.5)
    assert _count(postfix, mid) == 0
    assert "quarantine=failed" in sg.log()


def test_helo_reject_is_deferred_to_rcpt_and_postmaster_exempt(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    helo_filter = '[filters.example_keyword]\nenabled = true\nreject_helo = ["bad.example"]\n'
    refusal = (554, "5.7.1 HELO bad.example refused by example filter")
    sg = spamgate("[pipeline]\ndefer_rejects = true\n" + helo_filter)
    mid = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["alice@example.edu", "postmaster@example.edu"], _msg(mid, "hi"),
               helo="bad.example")
    assert res.ehlo[0] == 250 and res.mail[0] == 250
    assert res.rcpt[0] == refusal
    assert res.rcpt[1][0] == 250
    assert res.data is not None and res.data[0] == 250
    postfix.wait_for(lambda m: mid.encode() in m, rcpt="postmaster@example.edu")
    assert _count(postfix, mid) == 0

    direct = spamgate(helo_filter)
    res = send(direct.port, "sender@example.org", ["alice@example.edu"], _msg(uuid.uuid4().hex, "hi"),
               helo="bad.example")
    assert res.ehlo == refusal
    assert res.mail[0] == 503  # a refused HELO does not count: the client must greet again


def test_quarantine_rejects_keeps_would_be_rejects(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate(
        "[pipeline]\nquarantine_rejects = true\n"
        '[filters.example_keyword]\nenabled = true\nspam_score = 20.0\n'
        "[actions]\nreject = 15.0\n"
    )
    mid = uuid.uuid4().hex
    res = send(sg.port, "sender@example.org", ["alice@example.edu"], _msg(mid, "VIAGRA"))
    assert res.data is not None and res.data[0] == 250 and "quarantined as" in res.data[1]
    qid = res.data[1].rsplit(" ", 1)[1]
    listing = subprocess.run([sys.executable, "-m", "spamgate.proxy", "quarantine", "list", "--json", "--config",
                              str(sg.config_path)], capture_output=True, text=True, check=True)
    assert f'"id": "{qid}"' in listing.stdout and '"action": "reject"' in listing.stdout
    time.sleep(0.5)
    assert _count(postfix, mid) == 0
