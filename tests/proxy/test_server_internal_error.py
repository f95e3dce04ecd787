"""A bug in spamgate's own code answers 451 4.3.0 (never aiosmtpd's ``500 Error: <text>``) and is logged."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from spamgate.proxy.config import parse_config
from spamgate.proxy.server import Server
from spamgate.proxy.transaction import TransactionController


class Boom(RuntimeError):
    pass


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    cfg = parse_config(
        {
            "server": {"hostname": "gate.test", "state_dir": str(tmp_path / "state"), "shutdown_grace": 1},
            "listen": [{"host": "127.0.0.1", "port": 0, "role": "mx"}],
            "backend": {"url": f"maildir:{tmp_path / 'maildir'}"},
            "metrics": {"enabled": False},
        },
        "<test>",
    )
    srv = Server(cfg)
    await srv.start()
    yield srv
    await srv.shutdown()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(lines)

    async def cmd(self, line: bytes) -> str:
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _client(srv: Server) -> Client:
    c = Client(*await asyncio.open_connection("127.0.0.1", next(iter(srv.ports.values()))))
    assert (await c.reply()).startswith("220 ")
    assert (await c.cmd(b"EHLO client.test")).startswith("250")
    return c


def _maildir_files(tmp_path: Path) -> list[Path]:
    new = tmp_path / "maildir" / "new"
    return list(new.iterdir()) if new.is_dir() else []


async def test_exception_in_mail_answers_451_and_logs_traceback_with_session_id(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def broken(self: TransactionController, address: str, options: list[str]) -> Any:
        raise Boom("secret internal detail")

    monkeypatch.setattr(TransactionController, "on_mail", broken)
    c = await _client(server)
    reply = await c.cmd(b"MAIL FROM:<sender@example.org>")
    assert reply == "451 4.3.0 Internal error, please try again later"
    # The session survives the bug.
    assert (await c.cmd(b"NOOP")).startswith("250")
    await c.close()

    # The session id is bound once at connect and carried by every record of that session.
    ids = [getattr(r, "session", None) for r in caplog.records if r.getMessage().startswith("connect ")]
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{10}", str(ids[0]))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert getattr(errors[0], "session", None) == ids[0]
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is Boom
    assert "secret internal detail" in caplog.text
    assert "Traceback (most recent call last)" in caplog.text


async def test_exception_at_end_of_data_451_and_nothing_delivered(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def broken(self: TransactionController, content: bytes) -> Any:
        raise Boom("boom at DATA")

    c = await _client(server)
    assert (await c.cmd(b"MAIL FROM:<sender@example.org>")).startswith("250")
    assert (await c.cmd(b"RCPT TO:<alice@example.edu>")).startswith("250")
    monkeypatch.setattr(TransactionController, "on_data", broken)
    assert (await c.cmd(b"DATA")).startswith("354")
    reply = await c.cmd(b"Subject: x\r\n\r\nbody\r\n.")
    assert reply == "451 4.3.0 Internal error, please try again later"
    assert "boom" not in reply
    monkeypatch.undo()
    # The next transaction on the same session works and is the only one delivered.
    assert (await c.cmd(b"MAIL FROM:<sender@example.org>")).startswith("250")
    assert (await c.cmd(b"RCPT TO:<alice@example.edu>")).startswith("250")
    assert (await c.cmd(b"DATA")).startswith("354")
    assert (await c.cmd(b"Subject: y\r\n\r\nsecond\r\n.")).startswith("250")
    await c.close()
    files = _maildir_files(tmp_path)
    assert len(files) == 1
    assert b"second" in files[0].read_bytes()
