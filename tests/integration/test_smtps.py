"""Implicit TLS (role = "smtps", port 465 style) with AUTH, and STARTTLS facts in the Received header."""

from __future__ import annotations

import smtplib
import ssl
import urllib.request
import uuid
from pathlib import Path

from spamgate.proxy.tools.passwd import add_user
from tests.integration.conftest import SpamgateFactory
from tests.integration.services.postfix import Postfix
from tests.integration.services.testca import make_ca

USER, PASSWORD = "alice@example.edu", "correct horse battery"


def test_smtps_login_and_delivery(postfix: Postfix, spamgate: SpamgateFactory, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    passwd = tmp_path / "passwd"
    add_user(passwd, USER, PASSWORD)
    sg = spamgate(
        "[filters.local_sender]\nenabled = true\n",
        listen_toml=(
            '[[listen]]\nname = "mx"\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
            f'[[listen]]\nname = "smtps"\nhost = "127.0.0.1"\nport = @PORT2@\nrole = "smtps"\n'
            f'tls_cert = "{ca.cert}"\ntls_key = "{ca.key}"\n'
        ),
        auth_toml=f'local_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{passwd}"\n',
    )
    ctx = ssl.create_default_context(cafile=str(ca.ca_cert))
    mid = uuid.uuid4().hex
    msg = (f"From: <{USER}>\r\nTo: <bob@example.edu>\r\nSubject: smtps {mid}\r\n"
           f"Message-ID: <{mid}@example.edu>\r\n\r\nover implicit TLS\r\n").encode()
    with smtplib.SMTP_SSL("127.0.0.1", sg.port2, context=ctx, timeout=30) as s:
        code, _ = s.ehlo("laptop.example.edu")
        assert code == 250 and s.has_extn("auth") and not s.has_extn("starttls")
        assert s.mail(USER)[0] == 530  # submission-style listener: log in first
        s.rset()
        s.login(USER, PASSWORD)
        s.sendmail(USER, ["bob@example.edu"], msg)
    got = postfix.wait_for(lambda m: mid.encode() in m, rcpt="bob@example.edu")
    assert b"with ESMTPSA id" in got
    assert b"(using TLSv1." in got
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{sg.metrics_port}/metrics", timeout=10).read().decode()
    assert 'spamgate_tls_sessions_total{listener="smtps",version="TLSv1.3"} 1.0' in metrics
    assert 'spamgate_auth_attempts_total{mechanism="PLAIN",result="success"} 1.0' in metrics


def test_failed_starttls_handshake_is_not_an_internal_error(spamgate: SpamgateFactory, tmp_path: Path) -> None:
    from tests.integration.smtp_client import RawClient

    ca = make_ca(tmp_path / "ca")
    sg = spamgate(listen_toml=(f'[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
                               f'tls_cert = "{ca.cert}"\ntls_key = "{ca.key}"\n'))
    c = RawClient(sg.port)
    try:
        c.reply()
        c.cmd("EHLO broken.example")
        assert c.cmd("STARTTLS") == (220, "Ready to start TLS")
        c.send(b"this is not a TLS ClientHello\r\n" * 4)
        assert c.closed()
    finally:
        c.close()
    # The server is unharmed and says why, without calling it a bug.
    ctx = ssl.create_default_context(cafile=str(ca.ca_cert))
    with smtplib.SMTP("127.0.0.1", sg.port, timeout=30) as s:
        s.starttls(context=ctx)
        assert s.ehlo("fine.example")[0] == 250
    log = sg.log()
    assert "starttls=failed" in log and "internal error" not in log
