"""SMTP smuggling in both directions, and STARTTLS command injection, through real Postfix.

Inbound: an unauthenticated client on an ``mx`` listener, in front of a Postfix that is
itself lenient about bare newlines (3.7's default): spamgate alone must stop the attack.
Outbound: an authenticated sender on a ``submission`` listener, in front of a Postfix with
``smtpd_forbid_bare_newline = reject``: any non-canonical line ending spamgate forwarded
would be refused there, so a 250 proves spamgate's output is clean.
Each variant ends a first message "early" and carries a whole second transaction; both
``[limits] bare_newline`` settings; the mailboxes and Postfix's log are checked.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from spamgate.proxy.tools.passwd import add_user
from tests.integration.conftest import SpamgateFactory
from tests.integration.protocol_support import close_clients, count_with, headers, new_id, session, transaction
from tests.integration.services.postfix import Postfix, running_postfix
from tests.integration.services.testca import TestCerts, make_ca
from tests.smuggling import ALL_VARIANTS

pytestmark = pytest.mark.integration

# hannob's smtpsmug list and SEC Consult's, beyond tests/smuggling.py: NUL after the dot, and
# doubled bare endings.
EXTRA_VARIANTS = {
    "crlf_dot_nul_crlf": b"\r\n.\x00\r\n",
    "lflf_dot_lflf": b"\n\n.\n\n",
    "crcr_dot_crcr": b"\r\r.\r\r",
    "cr_crlf_dot_cr_crlf": b"\r\r\n.\r\r\n",
}
VARIANTS = {**ALL_VARIANTS, **EXTRA_VARIANTS}
BARE = {n for n, seq in VARIANTS.items() if seq.replace(b"\r\n", b"").strip(b".\x00")}
USER, PASSWORD = "bob@example.edu", "builder of bridges"


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_clients()


@pytest.fixture(scope="module")
def strict_postfix() -> Iterator[Postfix]:
    with running_postfix("smtpd_forbid_bare_newline = reject\nsmtpd_forbid_bare_newline_exclusions =\n",
                         prefix="spamgate-postfix-strict-") as pf:
        yield pf


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCerts:
    return make_ca(tmp_path_factory.mktemp("ca"))


def _payload(mid: str, seq: bytes) -> bytes:
    return (
        headers(mid) + b"first part" + seq
        + b"MAIL FROM:<ceo@example.edu>\r\nRCPT TO:<carol@example.edu>\r\nDATA\r\n"
        + f"From: ceo@example.edu\r\nSubject: SMUGGLED {mid}\r\n\r\nwire the money\r\n".encode()
    )


def _start(spamgate: SpamgateFactory, backend: Postfix, mode: str, direction: str, tmp_path: Path) -> int:
    backend_toml = f'host = "127.0.0.1"\nport = {backend.port}\ntimeout = 30\n'
    if direction == "inbound":
        sg = spamgate(f'[limits]\nbare_newline = "{mode}"\n', backend_toml=backend_toml)
        return sg.port
    passwd = tmp_path / "passwd"
    add_user(passwd, USER, PASSWORD)
    sg = spamgate(
        f'[limits]\nbare_newline = "{mode}"\n',
        backend_toml=backend_toml,
        listen_toml='[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "submission"\nallow_plaintext_auth = true\n',
        auth_toml=f'local_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{passwd}"\n',
    )
    return sg.port


@pytest.mark.parametrize("mode", ["normalize", "reject"])
@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_no_variant_smuggles_a_second_message(
    direction: str, mode: str, postfix: Postfix, strict_postfix: Postfix, spamgate: SpamgateFactory, tmp_path: Path
) -> None:
    backend = postfix if direction == "inbound" else strict_postfix
    port = _start(spamgate, backend, mode, direction, tmp_path)
    c = session(port)
    sender = "sender@example.org"
    if direction == "outbound":
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert c.cmd(f"AUTH PLAIN {token}")[0] == 235
        sender = USER
    outcome: dict[str, tuple[str, int]] = {}
    for name, seq in VARIANTS.items():
        mid = f"{new_id()}-{name}"
        payload = _payload(mid, seq)
        if direction == "outbound":
            # A logged-in user's From: must be theirs (local_sender checks it): only smuggling is tested here.
            payload = payload.replace(b"From: Sender <sender@example.org>", f"From: <{USER}>".encode(), 1)
        code, text = transaction(c, sender, ["alice@example.edu"], payload)
        outcome[name] = (mid, code)
        if mode == "reject" and name in BARE:
            assert (code, text[:6]) == (554, "5.6.0 "), (name, code, text)
        else:
            assert code == 250, (name, code, text)
    # A clean message last: when it is delivered, every earlier one has been handled.
    fence = new_id()
    fence_msg = headers(fence) + b"fence\r\n"
    if direction == "outbound":
        fence_msg = fence_msg.replace(b"From: Sender <sender@example.org>", f"From: <{USER}>".encode(), 1)
    assert transaction(c, sender, ["alice@example.edu"], fence_msg)[0] == 250
    backend.wait_for(lambda m: fence.encode() in m)
    assert c.cmd("QUIT")[0] == 221

    for name, (mid, code) in outcome.items():
        assert count_with(backend, mid.encode()) == (1 if code == 250 else 0), name
    # The smuggled transaction never happened: no mail for its recipient, no trace of its sender.
    assert not any(b"SMUGGLED" in m for m in backend.messages("carol@example.edu"))
    log = backend.maillog()
    assert "ceo@example.edu" not in log
    assert "bare <LF>" not in log.lower() and "bare newline" not in log.lower(), log[-3000:]


def test_strict_postfix_really_refuses_bare_newlines(strict_postfix: Postfix) -> None:
    """The outbound check means something only if this Postfix refuses what spamgate must never send."""
    c = session(strict_postfix.port)
    assert c.cmd("MAIL FROM:<x@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(headers(new_id()) + b"bare\nline\r\n.\r\n")
    assert c.reply()[0] == 550


def _starttls_gate(spamgate: SpamgateFactory, certs: TestCerts) -> int:
    sg = spamgate(listen_toml=f'[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
                              f'tls_cert = "{certs.cert}"\ntls_key = "{certs.key}"\n')
    return sg.port


def _read_reply(sock: socket.socket | ssl.SSLSocket) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n") or buf.split(b"\r\n")[-2][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(buf)
        buf += chunk
    return buf


@pytest.mark.parametrize("injected", [b"RSET\r\n", b"MAIL FROM:<evil@example.org>\r\n", b"NOOP\r\n" * 50,
                                      b"EHLO evil\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<carol@example.edu>\r\n"],
                         ids=["rset", "mail", "noop_x50", "ehlo_mail_rcpt"])
def test_commands_pipelined_after_starttls_are_discarded(
    injected: bytes, spamgate: SpamgateFactory, certs: TestCerts
) -> None:
    """CVE-2011-0411 / aiosmtpd CVE-2024-34083: plaintext sent with STARTTLS must not run inside TLS."""
    port = _starttls_gate(spamgate, certs)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls: ssl.SSLSocket | None = None
    try:
        assert _read_reply(raw).startswith(b"220 ")
        raw.sendall(b"EHLO client.test\r\n")
        assert b"STARTTLS" in _read_reply(raw)
        raw.sendall(b"STARTTLS\r\n" + injected)
        assert _read_reply(raw).startswith(b"220 ")
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        # Had the injected commands run inside TLS, their replies would be waiting now.
        tls.settimeout(1.0)
        with pytest.raises(TimeoutError):
            tls.recv(4096)
        tls.settimeout(10)
        # The session inside TLS starts clean: a new EHLO, then our own transaction only.
        tls.sendall(b"MAIL FROM:<good@example.org>\r\n")
        assert _read_reply(tls).startswith(b"503"), "MAIL without EHLO after STARTTLS must be refused"
        tls.sendall(b"EHLO client.test\r\n")
        assert _read_reply(tls).startswith(b"250")
        tls.sendall(b"MAIL FROM:<good@example.org>\r\n")
        assert _read_reply(tls).startswith(b"250")
        tls.sendall(b"RCPT TO:<alice@example.edu>\r\n")
        assert _read_reply(tls).startswith(b"250")
        tls.sendall(b"QUIT\r\n")
        assert _read_reply(tls).startswith(b"221")
    finally:
        (tls or raw).close()
