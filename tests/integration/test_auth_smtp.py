"""SMTP AUTH and anti-spoofing end to end: swaks (a real client) -> spamgate -> Postfix.

A test CA made by the suite; STARTTLS verified by swaks against that CA; passwords in
an argon2id file made with the same code as ``spamgate passwd``.
"""

from __future__ import annotations

import base64
import re
import smtplib
import subprocess
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from spamgate.proxy.tools.passwd import add_user
from tests.integration.conftest import Spamgate, SpamgateFactory
from tests.integration.services.dovecot import start_dovecot
from tests.integration.services.postfix import Postfix
from tests.integration.services.testca import TestCerts, make_ca

SWAKS = "/usr/bin/swaks"
ALICE, ALICE_PW = "alice@example.edu", "correct horse battery staple"


@dataclass(frozen=True)
class Setup:
    ca: TestCerts
    passwd: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    d = tmp_path_factory.mktemp("auth")
    passwd = d / "passwd"
    add_user(passwd, ALICE, ALICE_PW)
    add_user(passwd, "bob@example.edu", "builder")
    return Setup(make_ca(d / "ca"), passwd)


def start(spamgate: SpamgateFactory, setup: Setup, auth_extra: str = "") -> Spamgate:
    return spamgate(
        "[filters.local_sender]\nenabled = true\n",
        listen_toml=(
            f'[[listen]]\nname = "mx"\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
            f'tls_cert = "{setup.ca.cert}"\ntls_key = "{setup.ca.key}"\n'
            f'[[listen]]\nname = "submission"\nhost = "127.0.0.1"\nport = @PORT2@\nrole = "submission"\n'
            f'tls_cert = "{setup.ca.cert}"\ntls_key = "{setup.ca.key}"\n'
        ),
        auth_toml=(
            f'local_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{setup.passwd}"\n{auth_extra}'
        ),
    )


def swaks(port: int, *args: str, mail_from: str, to: str = "professor@example.edu", marker: str = "") -> str:
    cmd = [
        SWAKS, "--server", "127.0.0.1", "--port", str(port), "--ehlo", "www.test.com",
        "--from", mail_from, "--to", to, "--timeout", "30",
        "--header", f"Subject: spamgate auth test {marker}", *args,
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    return r.stdout + r.stderr


def replies(out: str) -> list[str]:
    """The server's reply lines in swaks' transcript (``<-``, ``<~`` inside TLS, ``*`` on errors)."""
    return [m.group(1) for m in re.finditer(r"^<[-~*]+ +(.*)$", out, re.M)]


def said(out: str, reply: str) -> bool:
    return any(line.startswith(reply) for line in replies(out))


def queued(out: str) -> bool:
    """Postfix's 250 for the message ("Ok: queued as X"; after BDAT "Ok: N bytes queued as X")."""
    return any(re.match(r"250 2\.0\.0 Ok: (\d+ bytes )?queued as ", line) for line in replies(out))


def tls_args(setup: Setup) -> list[str]:
    return ["--tls", "--tls-verify", "--tls-ca-path", str(setup.ca.ca_cert)]


def login(user: str, password: str) -> list[str]:
    return ["--auth", "LOGIN", "--auth-user", user, "--auth-password", password]


def marked(postfix: Postfix, marker: str, rcpts: Sequence[str] = ("professor@example.edu",)) -> list[bytes]:
    return [m for r in rcpts for m in postfix.messages(r) if marker.encode() in m]


def test_spoofing_session_refused_and_nothing_delivered(
    spamgate: SpamgateFactory, setup: Setup, postfix: Postfix
) -> None:
    sg = start(spamgate, setup)
    marker = uuid.uuid4().hex
    out = swaks(
        sg.port, "--header", 'From: "Secretary" <secr@example.edu>', mail_from="secr@example.edu", marker=marker
    )
    assert said(out, "553 5.7.1 <secr@example.edu>: Sender address rejected: not logged in"), out
    # The header-only spoof (external envelope sender) is refused at DATA.
    out = swaks(
        sg.port, "--header", 'From: "Secretary" <secr@example.edu>', mail_from="x@spoofer.example", marker=marker
    )
    assert said(out, "550 5.7.1") and "secr@example.edu" in out, out
    assert marked(postfix, marker) == []
    assert f"Subject: spamgate auth test {marker}" not in postfix.maillog()


def test_starttls_auth_login_delivered(spamgate: SpamgateFactory, setup: Setup, postfix: Postfix) -> None:
    sg = start(spamgate, setup)
    marker = uuid.uuid4().hex
    out = swaks(sg.port, *tls_args(setup), *login(ALICE, ALICE_PW), mail_from=ALICE, marker=marker)
    assert said(out, "235 2.7.0"), out
    assert queued(out), out
    msg = postfix.wait_for(lambda m: marker.encode() in m, rcpt="professor@example.edu")
    assert b"From: alice@example.edu" in msg or ALICE.encode() in msg
    assert "sasl_username=alice@example.edu" in postfix.maillog(), "XCLIENT LOGIN= reached Postfix"
    assert ALICE_PW not in sg.log() and base64.b64encode(ALICE_PW.encode()).decode() not in sg.log()


def test_submission_needs_auth_and_works_with_it(spamgate: SpamgateFactory, setup: Setup, postfix: Postfix) -> None:
    sg = start(spamgate, setup)
    marker = uuid.uuid4().hex
    out = swaks(sg.port2, *tls_args(setup), mail_from="friend@example.org", marker=marker)
    assert said(out, "530 5.7.0 Authentication required"), out
    out = swaks(sg.port2, *tls_args(setup), *login(ALICE, ALICE_PW), mail_from=ALICE, marker=marker)
    assert said(out, "235 2.7.0"), out
    postfix.wait_for(lambda m: marker.encode() in m, rcpt="professor@example.edu")


def test_wrong_password_535(spamgate: SpamgateFactory, setup: Setup) -> None:
    sg = start(spamgate, setup)
    out = swaks(sg.port, *tls_args(setup), *login(ALICE, "wrong"), mail_from=ALICE)
    assert said(out, "535 5.7.8"), out


def test_auth_before_starttls_refused(spamgate: SpamgateFactory, setup: Setup) -> None:
    sg = start(spamgate, setup)
    out = swaks(sg.port, "--quit-after", "EHLO", mail_from=ALICE)
    assert "STARTTLS" in out and "AUTH" not in out.split("EHLO")[-1], out
    plain = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=30) as s:
        s.ehlo("www.test.com")
        code, text = s.docmd("AUTH", f"PLAIN {plain}")
    assert code in (530, 538), text


def test_sender_login_mismatch_553(spamgate: SpamgateFactory, setup: Setup, postfix: Postfix) -> None:
    sg = start(spamgate, setup)
    marker = uuid.uuid4().hex
    out = swaks(sg.port, *tls_args(setup), *login(ALICE, ALICE_PW), mail_from="secr@example.edu", marker=marker)
    assert said(out, "235 2.7.0"), out
    assert said(out, "553 5.7.1 <secr@example.edu>: Sender address rejected: not owned by user alice@example.edu"), out
    assert marked(postfix, marker) == []


def test_brute_force_lockout(spamgate: SpamgateFactory, setup: Setup) -> None:
    sg = start(spamgate, setup, "max_failures = 3\nfailure_window = 600\npenalty_seconds = 600\n")
    outs = [swaks(sg.port, *tls_args(setup), *login(ALICE, f"guess{i}"), mail_from=ALICE) for i in range(3)]
    assert said(outs[0], "535 5.7.8") and said(outs[1], "535 5.7.8"), outs[:2]
    assert said(outs[2], "421 4.7.0"), outs[2]
    # Boxed: even the right password is refused now.
    out = swaks(sg.port, *tls_args(setup), *login(ALICE, ALICE_PW), mail_from=ALICE)
    assert said(out, "454 4.7.0"), out
    assert "235 2.7.0" not in out
    with urllib.request.urlopen(f"http://127.0.0.1:{sg.metrics_port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert "spamgate_auth_penalty_box_total 1.0" in metrics, metrics[-2000:]


def test_dovecot_backend_login_delivered(spamgate: SpamgateFactory, setup: Setup, postfix: Postfix) -> None:
    dv = start_dovecot({"bob@example.edu": "dovecot-pw"})
    try:
        sg = spamgate(
            "[filters.local_sender]\nenabled = true\n",
            listen_toml=(
                '[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "submission"\n'
                f'tls_cert = "{setup.ca.cert}"\ntls_key = "{setup.ca.key}"\n'
            ),
            auth_toml=f'local_domains = ["example.edu"]\nbackend = "dovecot"\ndovecot_socket = "{dv.socket_path}"\n',
        )
        marker = uuid.uuid4().hex
        out = swaks(sg.port, *tls_args(setup), *login("bob@example.edu", "dovecot-pw"), mail_from="bob@example.edu",
                    marker=marker)  # fmt: skip
        assert said(out, "235 2.7.0") and queued(out), out
        postfix.wait_for(lambda m: marker.encode() in m, rcpt="professor@example.edu")
        out = swaks(sg.port, *tls_args(setup), *login("bob@example.edu", "wrong"), mail_from="bob@example.edu")
        assert said(out, "535 5.7.8"), out
    finally:
        dv.close()
