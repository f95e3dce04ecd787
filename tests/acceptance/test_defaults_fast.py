"""A new user's box: no local resolver, clients on loopback, a reload now and then."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import statistics
import time
import uuid
from pathlib import Path

import aiosmtplib
import pytest

from spamgate.proxy.tools.passwd import add_user
from tests.acceptance.conftest import MinimalFactory, metrics_text
from tests.integration.services.postfix import Postfix
from tests.integration.services.testca import make_ca


def _ehlo_seconds(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        start = time.perf_counter()
        assert f.readline().startswith(b"220")
        s.sendall(b"EHLO client.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        took = time.perf_counter() - start
        s.sendall(b"QUIT\r\n")
    return took


def test_greeting_and_ehlo_are_not_held_by_a_missing_resolver(minimal: MinimalFactory) -> None:
    sg = minimal('[auth]\nlocal_domains = ["example.edu"]\n')
    times = [_ehlo_seconds(sg.port) for _ in range(7)]
    # The target. Before the fix every connection waited 4.2 s (timeout x attempts).
    assert statistics.median(times) < 0.1, times
    # The failed lookups are counted, and /readyz says DNS is down without failing readiness.
    text = metrics_text()
    assert 'spamgate_dns_queries_total{rdtype="PTR",result="error"}' in text
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:9787/readyz", timeout=5) as r:
        body = r.read().decode()
    assert r.status == 200 and "degraded: dns (failed)" in body, body


async def _one(port: int, i: int, run: str, barrier: asyncio.Barrier) -> tuple[str, int]:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
    mid = f"{run}-{i}@load.test"
    try:
        await smtp.connect()
    except aiosmtplib.SMTPConnectResponseError as exc:
        await barrier.wait()
        return mid, exc.code
    await barrier.wait()  # all 200 sessions are open at the same time before anyone sends
    msg = f"From: <load@elsewhere.example>\r\nTo: <alice@example.edu>\r\nMessage-ID: <{mid}>\r\n\r\nhi {i}\r\n"
    try:
        await smtp.sendmail("load@elsewhere.example", ["alice@example.edu"], msg)
        code = 250
    except aiosmtplib.SMTPResponseException as exc:
        code = exc.code
    await smtp.quit()
    return mid, code


def test_200_concurrent_loopback_sessions_are_all_delivered_once(minimal: MinimalFactory, postfix: Postfix) -> None:
    sg = minimal('[auth]\nlocal_domains = ["example.edu"]\n')
    run = uuid.uuid4().hex[:8]

    async def main() -> list[tuple[str, int]]:
        barrier = asyncio.Barrier(200)
        return list(await asyncio.gather(*(_one(sg.port, i, run, barrier) for i in range(200))))

    results = asyncio.run(main())
    assert [code for _, code in results] == [250] * 200
    deadline = time.monotonic() + 60
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {}
        for m in postfix.messages("alice@example.edu"):
            for mid, _ in results:
                if f"<{mid}>".encode() in m:
                    counts[mid] = counts.get(mid, 0) + 1
        if len(counts) == 200:
            break
        time.sleep(0.2)
    assert len(counts) == 200 and set(counts.values()) == {1}


def test_a_lockout_survives_sighup(minimal: MinimalFactory, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    passwd = tmp_path / "passwd"
    add_user(passwd, "secr", "s3cret-enough")
    sg = minimal(f'[[listen]]\nhost = "127.0.0.1"\nport = @PORT2@\nrole = "submission"\n'
                 f'tls_cert = "{ca.cert}"\ntls_key = "{ca.key}"\n\n'
                 f'[auth]\nlocal_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{passwd}"\n')
    tls = ssl.create_default_context(cafile=str(ca.ca_cert))

    def attempt(password: str) -> int:
        s = smtplib.SMTP("127.0.0.1", sg.port2, timeout=30)
        try:
            s.ehlo("x.test")
            s.starttls(context=tls)
            s.ehlo("x.test")
            s.user, s.password = "secr", password
            try:
                s.auth("PLAIN", s.auth_plain)  # one mechanism, one failure per attempt
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code
            except smtplib.SMTPServerDisconnected:
                return 421
            return 235
        finally:
            s.close()

    codes = [attempt("wrong") for _ in range(5)]
    assert codes[-1] == 421, codes  # the fifth failure boxes the client
    assert attempt("s3cret-enough") == 454
    sg.proc.hup_and_wait()
    # Even the right password: a reload must not let a boxed client out.
    assert attempt("s3cret-enough") == 454


@pytest.fixture
def spamd(tmp_path: Path):  # type: ignore[no-untyped-def]
    from tests.integration.services.spamd import start_spamd

    s = start_spamd(tmp_path / "spamd", children=2)
    yield s
    s.close()


def test_spamd_down_is_a_few_log_lines_not_one_per_message(
    minimal: MinimalFactory, postfix: Postfix, spamd: object
) -> None:
    sg = minimal(f'[auth]\nlocal_domains = ["example.edu"]\n\n[filters.spamassassin]\nenabled = true\n'
                 f'host = "127.0.0.1"\nport = {spamd.port}\n')  # type: ignore[attr-defined]
    run = uuid.uuid4().hex[:8]

    def send(i: int) -> int:
        with smtplib.SMTP("127.0.0.1", sg.port, timeout=60) as s:
            msg = (f"From: <a@elsewhere.example>\r\nTo: <bob@example.edu>\r\nMessage-ID: <{run}-{i}@sa.test>\r\n"
                   f"Subject: note {i}\r\n\r\nplain words {i}\r\n")
            s.sendmail("a@elsewhere.example", ["bob@example.edu"], msg)
        return i

    send(-1)  # spamd up: scanned
    spamd.stop()  # type: ignore[attr-defined]
    before = len(sg.proc.log().splitlines())
    for i in range(50):
        send(i)
    lines = sg.proc.log().splitlines()[before:]
    about_it = [ln for ln in lines if "spamd" in ln.lower() or "spamassassin" in ln.lower() or "Traceback" in ln]
    assert len(about_it) < 5, "\n".join(about_it)
    assert any("state=down" in ln for ln in about_it)
    # Fail-open by default: every message was delivered, once.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = [m for m in postfix.messages("bob@example.edu") if f"{run}-".encode() in m]
        if len(got) >= 51:
            break
        time.sleep(0.2)
    mids = [m.split(b"Message-ID: <", 1)[1].split(b">", 1)[0] for m in got]
    assert len(mids) == 51 and len(set(mids)) == 51


def test_a_pipelining_client_gets_its_group_answered_in_one_write(minimal: MinimalFactory) -> None:
    """Postfix, Exim and most MTAs send MAIL, RCPT and DATA together (RFC 2920): with the minimal
    config their three replies come back in one write, and the message is delivered."""
    sg = minimal()
    with socket.create_connection(("127.0.0.1", sg.port), timeout=10) as s:
        buf = b""

        def until(final: bytes) -> bytes:
            nonlocal buf
            while final not in buf:
                chunk = s.recv(65536)
                assert chunk, buf
                buf += chunk
            got, buf = buf, b""
            return got

        assert until(b"\r\n").startswith(b"220 ")
        s.sendall(b"EHLO client.test\r\n")
        until(b"\r\n250 ")
        s.sendall(b"MAIL FROM:<p@elsewhere.example>\r\nRCPT TO:<alice@example.edu>\r\nDATA\r\n")
        burst = s.recv(65536)
        assert [line[:3] for line in burst.split(b"\r\n") if line] == [b"250", b"250", b"354"], burst
        s.sendall(b"Subject: pipelined\r\n\r\nhello\r\n.\r\n")
        assert until(b"\r\n").startswith(b"250 "), buf
        s.sendall(b"QUIT\r\n")
