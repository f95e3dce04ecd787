"""Helpers for the SMTP protocol tests: message builders, delivered-form models, a wire recorder."""

from __future__ import annotations

import re
import socket
import threading
import uuid

from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import RawClient

_NEWLINE = re.compile(rb"\r\n|\r|\n")


def new_id() -> str:
    return uuid.uuid4().hex


def headers(mid: str, subject: str | None = None, to: str = "alice@example.edu") -> bytes:
    return (
        f"From: Sender <sender@example.org>\r\nTo: {to}\r\nSubject: {subject or mid}\r\n"
        f"Message-ID: <{mid}@example.org>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode()


def stuff(data: bytes) -> bytes:
    """Dot-stuff CRLF data for the wire, as a correct client does."""
    return re.sub(rb"(?m)^\.", b"..", data)


def delivered_form(wire: bytes) -> bytes:
    """What Postfix's Maildir must hold for DATA bytes ``wire`` (without the final ``.CRLF``):
    the CRLF lines dot-unstuffed (RFC 5321 4.5.2), then every line ending as LF."""
    lines = [ln[1:] if ln.startswith(b".") else ln for ln in wire.split(b"\r\n")]
    return _NEWLINE.sub(b"\n", b"\r\n".join(lines))


def body_of(delivered: bytes) -> bytes:
    return delivered.split(b"\n\n", 1)[1]


def header_block(delivered: bytes) -> bytes:
    return delivered.split(b"\n\n", 1)[0] + b"\n"


def count_with(postfix: Postfix, needle: bytes, rcpt: str = "alice@example.edu") -> int:
    return sum(needle in m for m in postfix.messages(rcpt))


_open: list[RawClient] = []


def raw(port: int, source_address: str = "127.0.0.1", timeout: float = 30.0) -> RawClient:
    """A RawClient closed by ``close_clients()`` (the test modules call it after every test)."""
    c = RawClient(port, source_address=source_address, timeout=timeout)
    _open.append(c)
    return c


def close_clients() -> None:
    while _open:
        _open.pop().close()


def session(port: int, helo: str = "client.test", source_address: str = "127.0.0.1") -> RawClient:
    c = raw(port, source_address=source_address)
    code, _ = c.reply()
    assert code == 220
    code, _ = c.cmd(f"EHLO {helo}")
    assert code == 250
    return c


def transaction(c: RawClient, mail_from: str, rcpts: list[str], wire: bytes) -> tuple[int, str]:
    """One MAIL/RCPT/DATA; ``wire`` is sent as-is and must end with CRLF (``.CRLF`` is appended)."""
    assert c.cmd(f"MAIL FROM:<{mail_from}>")[0] == 250
    for r in rcpts:
        assert c.cmd(f"RCPT TO:<{r}>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    c.send(wire + b".\r\n")
    return c.reply()


class WireRecorder:
    """A loopback TCP relay that records what spamgate sends to the backend, byte for byte."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def sent(self) -> bytes:
        with self._lock:
            return b"".join(self.chunks)

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.chunks.append(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # Each socket is the source of exactly one pump, so each is closed exactly once.
            src.close()
