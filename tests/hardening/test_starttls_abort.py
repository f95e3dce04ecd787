"""A connection spamgate itself closes in the middle of a STARTTLS handshake (the command timeout,
a shutdown) must end its session like any other.

asyncio's SSLProtocol resolves the handshake waiter as if the handshake had succeeded when the
server aborts it, and never tells the SMTP protocol the connection is gone. Before the fix each
such client stayed counted forever (a few hundred silent clients filled max_sessions and locked
everybody out until a restart) and SIGTERM never finished (the goodbye to a half-dead TLS
transport raised inside the shutdown task).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hardening.live import running_spamgate
from tests.integration.conftest import Spamgate
from tests.integration.services.postfix import free_port
from tests.integration.services.testca import make_ca

pytestmark = pytest.mark.integration

SILENT = 5


@pytest.fixture
def tls_gate(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Spamgate]:
    certs = make_ca(tmp_path / "ca")
    port = free_port()
    listen = (f'[[listen]]\nhost = "127.0.0.1"\nport = {port}\n'
              f'tls_cert = "{certs.cert}"\ntls_key = "{certs.key}"\n')
    limits = getattr(request, "param", "")
    with running_spamgate(f'url = "maildir:{tmp_path}/maildir"\n', limits, listen, port) as sg:
        yield sg


def _silent_after_starttls(port: int) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert raw.recv(200).startswith(b"220")
    raw.sendall(b"EHLO silent.test\r\n")
    while b"250 " not in raw.recv(4096):
        pass
    raw.sendall(b"STARTTLS\r\n")
    assert raw.recv(200).startswith(b"220")
    return raw  # and never a ClientHello


def _active_sessions(sg: Spamgate) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{sg.metrics_port}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("spamgate_sessions_active{"))


@pytest.mark.parametrize("tls_gate", ["[limits]\ncommand_timeout = 1\n"], indirect=True)
def test_command_timeout_during_handshake_ends_the_session(tls_gate: Spamgate) -> None:
    clients = [_silent_after_starttls(tls_gate.port) for _ in range(SILENT)]
    for c in clients:
        assert c.recv(100) == b"", "spamgate should close a client that never starts the handshake"
        c.close()
    # The sockets are gone; the sessions must be gone from the count too (eventually, not timed).
    deadline = time.monotonic() + 20
    while _active_sessions(tls_gate) != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _active_sessions(tls_gate) == 0, tls_gate.log()[-2000:]
    assert tls_gate.log().count("starttls=failed") >= SILENT
    assert "Traceback" not in tls_gate.log()


def test_sigterm_with_a_client_mid_handshake_stops(tls_gate: Spamgate) -> None:
    clients = [_silent_after_starttls(tls_gate.port) for _ in range(SILENT)]
    assert tls_gate.proc is not None
    tls_gate.signal(signal.SIGTERM)
    try:
        rc = tls_gate.proc.wait(60)  # shutdown_grace is 5 s in this config; before the fix: never
    except subprocess.TimeoutExpired:
        pytest.fail(f"spamgate still running a minute after SIGTERM:\n{tls_gate.log()[-2000:]}")
    finally:
        for c in clients:
            c.close()
    assert rc == 0, tls_gate.log()[-2000:]
    assert "stopped" in tls_gate.log()
    assert "Task exception was never retrieved" not in tls_gate.log()
