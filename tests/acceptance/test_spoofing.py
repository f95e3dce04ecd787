"""The paper's spoof, and its variants, against the minimal config the README shows."""

from __future__ import annotations

import smtplib
import ssl
import uuid
from pathlib import Path

import pytest

from spamgate.proxy.tools.passwd import add_user
from tests.acceptance.conftest import MinimalFactory
from tests.integration.services.postfix import Postfix
from tests.integration.services.testca import TestCerts, make_ca
from tests.integration.smtp_client import send

LOCAL = '[auth]\nlocal_domains = ["example.edu"]\n'


def _msg(from_header: str, mid: str, to: str = "professor@example.edu") -> bytes:
    return (f"From: {from_header}\r\nTo: <{to}>\r\nSubject: urgent\r\nMessage-ID: <{mid}>\r\n\r\n"
            "Please buy gift cards.\r\n").encode()


def _delivered(postfix: Postfix, mid: str, rcpt: str = "professor@example.edu") -> int:
    return sum(1 for m in postfix.messages(rcpt) if f"<{mid}>".encode() in m)


def test_the_papers_spoof_is_refused_at_mail_from(minimal: MinimalFactory, postfix: Postfix) -> None:
    sg = minimal(LOCAL)
    mid = f"{uuid.uuid4()}@spoof.test"
    res = send(sg.port, "secr@example.edu", ["professor@example.edu"],
               _msg('"Secretary" <secr@example.edu>', mid), helo="www.test.com")
    assert res.mail == (553, "5.7.1 <secr@example.edu>: Sender address rejected: not logged in")
    assert _delivered(postfix, mid) == 0


def test_the_header_form_of_the_spoof_is_refused_at_data(minimal: MinimalFactory, postfix: Postfix) -> None:
    sg = minimal(LOCAL)
    mid = f"{uuid.uuid4()}@spoof.test"
    res = send(sg.port, "bounce@elsewhere.example", ["professor@example.edu"],
               _msg('"Secretary" <secr@example.edu>', mid))
    assert res.mail[0] == 250 and res.rcpt[0][0] == 250
    assert res.data is not None and res.data[0] == 550 and "secr@example.edu" in res.data[1]
    assert _delivered(postfix, mid) == 0
    # An outsider with its own From: still gets through: the policy is not a blanket refusal.
    ok_mid = f"{uuid.uuid4()}@ok.test"
    ok = send(sg.port, "friend@elsewhere.example", ["professor@example.edu"],
              _msg("<friend@elsewhere.example>", ok_mid))
    assert ok.delivered, ok
    postfix.wait_for(lambda m: ok_mid.encode() in m, rcpt="professor@example.edu")


def test_an_outsider_cannot_relay_to_elsewhere(minimal: MinimalFactory, postfix: Postfix) -> None:
    # Not an open relay from the minimal config, whatever the backend would allow spamgate itself.
    sg = minimal(LOCAL)
    res = send(sg.port, "spammer@outside.example", ["victim@elsewhere.example", "professor@example.edu"],
               _msg("<spammer@outside.example>", f"{uuid.uuid4()}@relay.test"))
    assert res.rcpt[0] == (554, "5.7.1 <victim@elsewhere.example>: Relay access denied")
    assert res.rcpt[1][0] == 250 and res.delivered


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCerts, Path]:
    d = tmp_path_factory.mktemp("acc-auth")
    passwd = d / "passwd"
    add_user(passwd, "secr", "s3cret-enough")
    return make_ca(d / "ca"), passwd


def _submission(ca: TestCerts, passwd: Path | None) -> str:
    out = (f'[[listen]]\nhost = "127.0.0.1"\nport = @PORT2@\nrole = "submission"\n'
           f'tls_cert = "{ca.cert}"\ntls_key = "{ca.key}"\n\n')
    if passwd is not None:
        out += f'[auth]\nlocal_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{passwd}"\n'
    return out


def _login(port: int, ca: TestCerts, user: str, password: str) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("laptop.example.edu")
    s.starttls(context=ssl.create_default_context(cafile=str(ca.ca_cert)))
    s.ehlo("laptop.example.edu")
    s.login(user, password)
    return s


def test_a_logged_in_user_cannot_forge_a_colleague_in_from(
    minimal: MinimalFactory, postfix: Postfix, creds: tuple[TestCerts, Path]
) -> None:
    ca, passwd = creds
    sg = minimal(_submission(ca, passwd))
    forged, honest = f"{uuid.uuid4()}@forged.test", f"{uuid.uuid4()}@honest.test"
    s = _login(sg.port2, ca, "secr", "s3cret-enough")
    try:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("secr@example.edu", ["professor@example.edu"], _msg("<other-secr@example.edu>", forged))
        assert e.value.smtp_code == 550
        assert b"other-secr@example.edu" in e.value.smtp_error and b"not owned by user secr" in e.value.smtp_error
        s.sendmail("secr@example.edu", ["professor@example.edu"], _msg('"Secretary" <secr@example.edu>', honest))
    finally:
        s.quit()
    postfix.wait_for(lambda m: honest.encode() in m, rcpt="professor@example.edu")
    assert _delivered(postfix, forged) == 0


def test_submission_without_auth_is_refused_by_the_engine(
    minimal: MinimalFactory, creds: tuple[TestCerts, Path]
) -> None:
    # No [auth] table and no filters at all: the submission role alone demands a login.
    ca, _ = creds
    sg = minimal(_submission(ca, None))
    s = smtplib.SMTP("127.0.0.1", sg.port2, timeout=30)
    try:
        s.ehlo("laptop.example.org")
        s.starttls(context=ssl.create_default_context(cafile=str(ca.ca_cert)))
        s.ehlo("laptop.example.org")
        assert s.mail("anyone@example.org") == (530, b"5.7.0 Authentication required")
    finally:
        s.close()


def test_check_config_warns_when_the_policy_is_switched_off(tmp_path: Path) -> None:
    import subprocess

    from tests.acceptance.conftest import SPAMGATE, dead_udp_port

    cfg = tmp_path / "spamgate.toml"
    cfg.write_text('[[listen]]\nport = 2525\n[backend]\nport = 10025\n[auth]\nlocal_domains = ["example.edu"]\n'
                   f'[filters.local_sender]\nenabled = false\n[dns]\nnameservers = ["127.0.0.1"]\n'
                   f"port = {dead_udp_port()}\n")
    out = subprocess.run([SPAMGATE, "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "local senders can be spoofed" in out.stderr
    assert "dns: no resolver answers" in out.stderr
