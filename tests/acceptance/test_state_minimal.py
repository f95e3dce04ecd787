"""[state] from a minimal config: per-IP session counts go through the server's store and survive a reload."""

from __future__ import annotations

import socket
import time

from tests.acceptance.conftest import Minimal, MinimalFactory


def _greeting(port: int) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, s.makefile("rb").readline()


def _disconnects(sg: Minimal) -> int:
    return sg.proc.log().count("disconnect transactions=")


def _wait_disconnects(sg: Minimal, n: int) -> None:
    deadline = time.monotonic() + 10
    while _disconnects(sg) < n:
        assert time.monotonic() < deadline, sg.proc.log()
        time.sleep(0.05)


def _first_session(port: int) -> socket.socket:
    """The fixture's readiness probe is a session too: wait until it has gone (then the count is 0)."""
    deadline = time.monotonic() + 10
    while True:
        s, hello = _greeting(port)
        if hello.startswith(b"220 "):
            return s
        s.close()
        assert time.monotonic() < deadline, hello
        time.sleep(0.05)


def test_per_ip_sessions_are_counted_across_a_reload(minimal: MinimalFactory) -> None:
    sg = minimal('[state]\nbackend = "memory"\n\n[limits]\nmax_sessions_per_ip = 1\nexempt_networks = []\n')
    first = _first_session(sg.port)
    second, refused = _greeting(sg.port)
    assert refused == b"421 4.7.0 Too many connections from your address, please try again later\r\n"
    second.close()
    sg.proc.hup_and_wait()
    third, refused = _greeting(sg.port)
    assert refused.startswith(b"421 4.7.0 "), "the reload kept the count of the open session"
    third.close()
    before = _disconnects(sg)
    first.close()
    _wait_disconnects(sg, before + 1)
    fourth, hello = _greeting(sg.port)
    assert hello.startswith(b"220 "), "the disconnect was counted down"
    fourth.sendall(b"QUIT\r\n")
    fourth.close()
    assert "Traceback" not in sg.proc.log()
