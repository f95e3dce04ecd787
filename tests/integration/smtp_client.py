"""A tiny SMTP client for tests: every step's reply, never an exception for an SMTP error."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

Reply = tuple[int, str]


@dataclass
class SendResult:
    banner: Reply = (0, "")
    ehlo: Reply = (0, "")
    mail: Reply = (0, "")
    rcpt: list[Reply] = field(default_factory=list)
    data: Reply | None = None

    @property
    def delivered(self) -> bool:
        return self.data is not None and self.data[0] == 250


def _r(resp: tuple[int, bytes | str]) -> Reply:
    text = resp[1]
    return resp[0], text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def send(
    port: int,
    mail_from: str,
    rcpts: Sequence[str],
    message: bytes,
    *,
    helo: str = "client.test",
    source_address: str = "127.0.0.1",
    host: str = "127.0.0.1",
    timeout: float = 60.0,
) -> SendResult:
    res = SendResult()
    smtp = smtplib.SMTP(timeout=timeout, source_address=(source_address, 0))
    try:
        res.banner = _r(smtp.connect(host, port))
        res.ehlo = _r(smtp.ehlo(helo))
        res.mail = _r(smtp.mail(mail_from))
        if res.mail[0] != 250:
            return res
        for r in rcpts:
            res.rcpt.append(_r(smtp.rcpt(r)))
        if not any(code == 250 for code, _ in res.rcpt):
            return res
        try:
            res.data = _r(smtp.data(message))
        except smtplib.SMTPDataError as exc:
            res.data = _r((exc.smtp_code, exc.smtp_error))
        return res
    except smtplib.SMTPServerDisconnected:
        return res
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


class RawClient:
    """Line-level access for protocol tests (smuggling, garbage, pipelining)."""

    def __init__(self, port: int, host: str = "127.0.0.1", source_address: str = "127.0.0.1",
                 timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=(source_address, 0))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """Read one (possibly multi-line) reply."""
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"connection closed; got so far: {lines!r} {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(x[4:] for x in lines)

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, TimeoutError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()
