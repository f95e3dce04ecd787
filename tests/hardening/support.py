"""Helpers for the hardening tests: process memory, a mail-counting client, a counting sink.

Exactly-once accounting: every message carries a unique Message-ID; the client logs the
final reply it got for each; the backend side is counted by Message-ID. ``Ledger.check``
compares the two.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MID = re.compile(rb"^Message-ID: <([0-9a-f]{32})@load\.test>", re.M | re.I)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def starttls_flood_client(port: int, i: int, ctx: ssl.SSLContext, *, source: str | None = None,
                          timeout: float = 30) -> str:
    """One client of a STARTTLS flood, by ``i % 3``: completes TLS and EHLO ("tls", or "bad" if
    EHLO fails), sends garbage instead of a ClientHello, or stays silent; the last two wait for
    the server to close ("closed")."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                   source_address=(source, 0) if source else None)
    try:
        raw.recv(200)
        raw.sendall(b"EHLO tls.flood\r\n")
        while b"250 " not in raw.recv(4096):
            pass
        raw.sendall(b"STARTTLS\r\n")
        raw.recv(200)
        if i % 3 == 0:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"EHLO tls.flood\r\n")
                return "tls" if tls.recv(4096).startswith(b"250") else "bad"
        if i % 3 == 1:
            raw.sendall(b"\x16\x03\x01 not a client hello\r\n" * 10)
        while raw.recv(4096):
            pass
        return "closed"
    finally:
        raw.close()


def message(mid: str, size: int = 600, to: str = "alice@example.edu") -> bytes:
    body = (b"load test line with some words in it\r\n" * (size // 38 + 1))[:size]
    return (
        f"From: load <load@example.org>\r\nTo: {to}\r\nSubject: load {mid}\r\n"
        f"Message-ID: <{mid}@load.test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode() + body + b"\r\n"


def ids_in(blobs: Iterable[bytes]) -> Counter[str]:
    """Message-IDs of the load messages found in delivered blobs, with multiplicity."""
    found: Counter[str] = Counter()
    for blob in blobs:
        for m in MID.finditer(blob):
            found[m.group(1).decode()] += 1
    return found


@dataclass
class Ledger:
    """The client's own log: the final reply for every message it tried to send."""

    accepted: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # mid -> reply (4xx/5xx or error before DATA end)
    unknown: set[str] = field(default_factory=set)  # the end of DATA was sent but no reply came
    replies: Counter[str] = field(default_factory=Counter)

    def record(self, mid: str, reply: str | None, after_dot: bool) -> None:
        if reply is not None and reply.startswith("250"):
            self.accepted.add(mid)
        elif reply is None and after_dot:
            self.unknown.add(mid)
        else:
            self.refused[mid] = reply or "connection failed"
        self.replies[(reply or ("no reply after dot" if after_dot else "no connection"))[:3]] += 1

    def check(self, delivered: Counter[str]) -> list[str]:
        """Violations of exactly-once (an empty list is success)."""
        problems = []
        for mid in self.accepted:
            if delivered[mid] != 1:
                problems.append(f"accepted {mid} delivered {delivered[mid]} times")
        for mid, why in self.refused.items():
            if delivered[mid]:
                problems.append(f"refused {mid} ({why!r}) delivered {delivered[mid]} times")
        for mid in self.unknown:
            if delivered[mid] > 1:
                problems.append(f"unanswered {mid} delivered {delivered[mid]} times")
        known = self.accepted | set(self.refused) | self.unknown
        problems += [f"{mid} delivered but never sent" for mid in delivered if mid not in known]
        return problems

    @property
    def total(self) -> int:
        return len(self.accepted) + len(self.refused) + len(self.unknown)

    def summary(self) -> str:
        return (f"accepted={len(self.accepted)} refused={len(self.refused)} unknown={len(self.unknown)} "
                f"replies={dict(self.replies)}")


async def _reply(reader: asyncio.StreamReader) -> str:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
        if line[3:4] != b"-":
            return "\n".join(lines)


async def send_one(port: int, ledger: Ledger, *, rcpt: str = "alice@example.edu", source: str = "127.0.0.1",
                   limit: float = 60.0, size: int = 600) -> str | None:
    """One message in its own session; its outcome goes to ``ledger``. Returns the final reply."""
    mid = uuid.uuid4().hex
    after_dot = False
    reply: str | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            steps = [None, b"EHLO load.test", b"MAIL FROM:<load@example.org>", f"RCPT TO:<{rcpt}>".encode(), b"DATA"]
            for cmd in steps:
                if cmd is not None:
                    writer.write(cmd + b"\r\n")
                reply = await _reply(reader)
                if not reply.startswith(("2", "3")):
                    ledger.record(mid, reply, after_dot=False)
                    return reply
            writer.write(message(mid, size, rcpt) + b".\r\n")
            after_dot = True
            reply = await _reply(reader)
            ledger.record(mid, reply, after_dot=True)
            writer.write(b"QUIT\r\n")
            return reply
    except (OSError, ConnectionError, TimeoutError):
        ledger.record(mid, None, after_dot=after_dot)
        return None
    finally:
        if writer is not None:
            writer.close()


async def load(port: int, ledger: Ledger, *, clients: int, until: Callable[[], bool], pause: float = 0.0,
               rcpt: str = "alice@example.edu", sources: Sequence[str] = ("127.0.0.1",)) -> None:
    """``clients`` concurrent senders, each sending one message per session until ``until()``;
    client ``i`` connects from ``sources[i % len(sources)]`` (spamgate limits sessions per IP)."""

    async def worker(i: int) -> None:
        while not until():
            reply = await send_one(port, ledger, rcpt=rcpt, source=sources[i % len(sources)])
            if reply is None or not reply.startswith("250") or pause:
                await asyncio.sleep(max(pause, 0.05))

    await asyncio.gather(*(worker(i) for i in range(clients)))


def run_load_in_thread(port: int, ledger: Ledger, *, clients: int, stop: threading.Event,
                       pause: float = 0.0, sources: Sequence[str] = ("127.0.0.1",)) -> threading.Thread:
    t = threading.Thread(
        target=lambda: asyncio.run(load(port, ledger, clients=clients, until=stop.is_set, pause=pause,
                                        sources=sources)),
        daemon=True,
    )
    t.start()
    return t
