"""Backend trouble, load, reload and shutdown, and the command line, with real processes."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from tests.integration.conftest import REPO, SpamgateFactory
from tests.integration.protocol_support import (
    close_clients,
    count_with,
    headers,
    new_id,
    raw,
    session,
    transaction,
)
from tests.integration.services.postfix import Postfix, free_port, running_postfix

SPAMGATE = [sys.executable, "-m", "spamgate.proxy"]


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_clients()


@pytest.fixture
def private_postfix() -> Iterator[Postfix]:
    """A second Postfix this test may stop and start without disturbing the shared one."""
    with running_postfix(prefix="spamgate-postfix2-") as pf:
        yield pf


class SilentServer:
    """Accepts TCP connections and never says a word (a hung backend)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_backend_stopped_4xx_then_mail_flows_again(private_postfix: Postfix, spamgate: SpamgateFactory) -> None:
    pf = private_postfix
    sg = spamgate(backend_toml=f'host = "127.0.0.1"\nport = {pf.port}\ntimeout = 5\nconnect_timeout = 5\n')
    mid = new_id()
    c = session(sg.port)
    assert transaction(c, "sender@example.org", ["alice@example.edu"], headers(mid + "-before") + b"x\r\n")[0] == 250
    pf.wait_for(lambda m: f"{mid}-before".encode() in m)
    pf.stop()

    # Both a fresh session and one whose pooled backend connection just died get a 4xx at MAIL.
    for client in (c, session(sg.port)):
        code, text = client.cmd("MAIL FROM:<sender@example.org>")
        assert 400 <= code < 500 and text.startswith("4."), (code, text)
        assert client.cmd("RCPT TO:<alice@example.edu>")[0] == 503
        assert client.cmd("DATA")[0] == 503

    pf.start()
    assert transaction(c, "sender@example.org", ["alice@example.edu"], headers(mid + "-after") + b"x\r\n")[0] == 250
    pf.wait_for(lambda m: f"{mid}-after".encode() in m)
    assert count_with(pf, mid.encode()) == 2


def test_backend_dies_mid_transaction_never_250(private_postfix: Postfix, spamgate: SpamgateFactory) -> None:
    pf = private_postfix
    sg = spamgate(backend_toml=f'host = "127.0.0.1"\nport = {pf.port}\ntimeout = 5\nconnect_timeout = 5\n')
    mid = new_id()
    c = session(sg.port)
    assert c.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    pf.stop()
    c.send(headers(mid) + b"the backend is gone\r\n.\r\n")
    code, text = c.reply()
    assert 400 <= code < 500, (code, text)
    pf.start()
    assert count_with(pf, mid.encode()) == 0


def test_hanging_backend_4xx_within_the_timeout(spamgate: SpamgateFactory) -> None:
    silent = SilentServer()
    try:
        sg = spamgate(backend_toml=f'host = "127.0.0.1"\nport = {silent.port}\ntimeout = 2\n')
        # The client gives up well before anything like a default timeout: a hang would fail here.
        c = raw(sg.port, timeout=8)
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        code, text = c.cmd("MAIL FROM:<sender@example.org>")
        assert code == 451 and text.startswith("4.4."), (code, text)
        assert c.cmd("NOOP")[0] == 250
    finally:
        silent.close()


async def _send_one(port: int, i: int, mid: str) -> tuple[int, str]:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120,
                           source_address=(f"127.0.1.{i % 20 + 1}", 0), local_hostname=f"client{i}.test")
    await smtp.connect()
    try:
        msg = headers(f"{mid}-{i}") + f"message {i}\r\n".encode()
        errors, reply = await smtp.sendmail("load@example.org", ["dave@example.edu"], msg)
        assert not errors
        return 250, reply
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        smtp.close()


def test_200_concurrent_clients_each_delivered_once(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    n = 200

    async def run() -> list[tuple[int, str]]:
        return await asyncio.gather(*(_send_one(sg.port, i, mid) for i in range(n)))

    results = asyncio.run(run())
    assert [code for code, _ in results] == [250] * n, [r for r in results if r[0] != 250][:5]
    queue_ids = {text.rsplit(" ", 1)[-1] for _, text in results}
    assert len(queue_ids) == n
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and count_with(postfix, mid.encode(), "dave@example.edu") < n:
        time.sleep(0.2)
    seen: dict[str, int] = {}
    for m in postfix.messages("dave@example.edu"):
        for i in range(n):
            if f"<{mid}-{i}@example.org>".encode() in m:
                seen[str(i)] = seen.get(str(i), 0) + 1
    assert seen == {str(i): 1 for i in range(n)}


def test_sighup_reload_new_sessions_use_new_config(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate("[actions]\nadd_header = 6.0\n")
    old = session(sg.port)
    mid = new_id()
    sg.config_path.write_text(sg.config_path.read_text().replace("add_header = 6.0", "add_header = 3.5"))
    sg.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reloaded config" not in sg.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reloaded config" in sg.log()
    new = session(sg.port)
    assert transaction(new, "s@example.org", ["alice@example.edu"], headers(mid + "-new") + b"x\r\n")[0] == 250
    assert transaction(old, "s@example.org", ["alice@example.edu"], headers(mid + "-old") + b"x\r\n")[0] == 250
    assert b"required=3.5 " in postfix.wait_for(lambda m: f"{mid}-new".encode() in m)
    assert b"required=6.0 " in postfix.wait_for(lambda m: f"{mid}-old".encode() in m)


def test_sighup_with_a_bad_config_keeps_running(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    sg.config_path.write_text(sg.config_path.read_text() + "\n[limits]\nmax_rcpts = 3\n")
    sg.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reload failed" not in sg.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"{sg.config_path}: limits.max_rcpts: unknown key" in sg.log()
    mid = new_id()
    c = session(sg.port)
    assert transaction(c, "s@example.org", ["alice@example.edu"], headers(mid) + b"x\r\n")[0] == 250
    postfix.wait_for(lambda m: mid.encode() in m)


def test_sigterm_finishes_transaction_refuses_new_exits_0(postfix: Postfix, spamgate: SpamgateFactory) -> None:
    sg = spamgate()
    mid = new_id()
    c = session(sg.port)
    assert c.cmd("MAIL FROM:<sender@example.org>")[0] == 250
    assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(headers(mid) + b"in flight when SIGTERM came\r\n")
    sg.signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while "shutting down" not in sg.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    # New connections are refused (or, in the instant before the listener closes, told 421).
    while time.monotonic() < deadline:
        try:
            late = socket.create_connection(("127.0.0.1", sg.port), timeout=5)
        except OSError:
            break
        with late:
            assert late.recv(100).startswith(b"421 4.3.2 ")
    else:
        pytest.fail("spamgate kept accepting connections after SIGTERM")
    c.send(b"the end\r\n.\r\n")
    code, text = c.reply()
    assert code == 250 and "queued as" in text, (code, text)
    assert sg.proc is not None
    assert sg.proc.wait(30) == 0
    postfix.wait_for(lambda m: mid.encode() in m)


def test_check_config_bad_file_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[backend]\nhost = "127.0.0.1"\nprot = 10025\n')
    r = subprocess.run([*SPAMGATE, "check-config", str(bad)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1
    assert f"{bad}: backend.prot: unknown key" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n[backend]\nurl = "maildir:{tmp_path}/md"\n')
    r = subprocess.run([*SPAMGATE, "check-config", str(good)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"maildir:{tmp_path}/md" in r.stdout


def test_run_with_bad_config_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[[listen]]\nport = {free_port()}\nrole = \"relay\"\n")
    r = subprocess.run([*SPAMGATE, "run", "--config", str(bad)], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode != 0
    assert f"{bad}: listen[0].role" in r.stderr


def test_version_and_help() -> None:
    from spamgate.proxy import __version__

    r = subprocess.run([str(Path(sys.executable).parent / "spamgate"), "--version"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    assert r.stdout.strip() == f"spamgate {__version__}"
    r = subprocess.run([*SPAMGATE, "--help"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0
    assert r.stdout.startswith("usage: spamgate")
    for command in ("run", "check-config"):
        assert command in r.stdout
