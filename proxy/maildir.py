"""The embedded default backend: deliver into a local Maildir (for trying spamgate out).

A message counts as delivered only once it is fsynced and renamed into ``new/``,
so the 250 the client gets is as honest as a real MTA's.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from itertools import count
from pathlib import Path

from spamgate.proxy.backend import BackendReply, ClientFacts, Transaction

__all__ = ["MaildirBackend"]

_seq = count()


def _deliver(root: Path, message: bytes) -> str:
    name = f"{time.time():.6f}.{os.getpid()}_{next(_seq)}.{socket.gethostname()}"
    tmp = root / "tmp" / name
    with open(tmp, "xb") as fh:
        fh.write(message)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, root / "new" / name)
    return name


class MaildirTransaction:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sender = ""
        self.rcpts: list[str] = []

    async def mail(self, sender: str, options: list[str]) -> BackendReply:
        self.sender = sender
        return BackendReply(250, "2.1.0 Ok")

    async def rcpt(self, rcpt: str, options: list[str]) -> BackendReply:
        self.rcpts.append(rcpt)
        return BackendReply(250, "2.1.5 Ok")

    async def data(self, message: bytes) -> BackendReply:
        envelope = f"Return-Path: <{self.sender}>\r\n" + "".join(f"Delivered-To: {r}\r\n" for r in self.rcpts)
        try:
            name = await asyncio.to_thread(_deliver, self.root, envelope.encode("utf-8", "surrogateescape") + message)
        except OSError as exc:
            return BackendReply(451, f"4.3.0 Maildir delivery failed: {exc.strerror}")
        return BackendReply(250, f"2.0.0 Ok: delivered as {name}")

    async def finish(self, reset: bool) -> None:
        return None


class MaildirBackend:
    def __init__(self, path: str) -> None:
        self.root = Path(path)
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    async def begin(self, client: ClientFacts) -> Transaction:
        return MaildirTransaction(self.root)

    async def ping(self) -> bool:
        return os.access(self.root / "new", os.W_OK)

    async def close(self) -> None:
        return None
