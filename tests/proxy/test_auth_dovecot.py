"""DovecotAuth against an in-process fake of Dovecot's auth socket (the real one is in
tests/integration/test_dovecot_auth.py)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spamgate.proxy.auth import AuthUnavailable, DovecotAuth

HANDSHAKE = b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\tab\nDONE\n"


@dataclass
class FakeDovecot:
    path: str
    mode: str = "normal"
    requests: list[list[str]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = [await reader.readline(), await reader.readline()]
            assert hello[0] == b"VERSION\t1\t2\n" and hello[1].startswith(b"CPID\t")
            if self.mode == "silent":
                await reader.read()  # until the client gives up
            writer.write(b"VERSION\t2\t0\nDONE\n" if self.mode == "v2" else HANDSHAKE)
            fields = (await reader.readline()).decode().rstrip("\n").split("\t")
            self.requests.append(fields)
            params = {k: v for k, _, v in (f.partition("=") for f in fields[3:])}
            _, user, pw = base64.b64decode(params["resp"]).decode().split("\0")
            rid = fields[1]
            if self.mode == "temp":
                writer.write(f"FAIL\t{rid}\ttemp\treason=backend down\n".encode())
            elif self.mode == "hangup":
                pass
            elif (user, pw) == ("alice@example.edu", "wonderland"):
                writer.write(f"NOTICE\t999\tnoise\nOK\t{rid}\tuser={user}\n".encode())
            else:
                writer.write(f"FAIL\t{rid}\tuser={user}\n".encode())
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeDovecot]:
    fd = FakeDovecot(str(tmp_path / "auth-client"))
    server = await asyncio.start_unix_server(fd.handle, fd.path)
    async with server:
        yield fd
        server.close()


async def test_ok_and_fail(fake: FakeDovecot) -> None:
    auth = DovecotAuth(fake.path, timeout=5)
    assert await auth.authenticate("alice@example.edu", "wonderland", client_ip="192.0.2.7")
    assert not await auth.authenticate("alice@example.edu", "nope", client_ip="192.0.2.7")
    req = fake.requests[0]
    assert req[0] == "AUTH" and req[2] == "PLAIN"
    assert {"service=smtp", "nologin", "secured", "rip=192.0.2.7"} <= set(req[3:])
    assert fake.requests[1][1] != req[1], "request ids are not reused"
    await auth.close()


async def test_concurrent_checks(fake: FakeDovecot) -> None:
    auth = DovecotAuth(fake.path, timeout=5, max_concurrent=3)
    got = await asyncio.gather(
        *(auth.authenticate("alice@example.edu", pw, client_ip="127.0.0.1") for pw in ["wonderland", "x"] * 10)
    )
    assert got == [True, False] * 10


async def test_invalid_input_never_reaches_dovecot(fake: FakeDovecot) -> None:
    auth = DovecotAuth(fake.path, timeout=5)
    assert not await auth.authenticate("alice\tx", "wonderland", client_ip="127.0.0.1")
    assert not await auth.authenticate("alice@example.edu", "won\0derland", client_ip="127.0.0.1")
    assert fake.requests == []


@pytest.mark.parametrize("mode", ["temp", "hangup", "v2"])
async def test_backend_trouble_is_unavailable_not_a_wrong_password(fake: FakeDovecot, mode: str) -> None:
    fake.mode = mode
    with pytest.raises(AuthUnavailable):
        await DovecotAuth(fake.path, timeout=5).authenticate("alice@example.edu", "wonderland", client_ip="::1")


async def test_timeout(fake: FakeDovecot) -> None:
    fake.mode = "silent"
    with pytest.raises(AuthUnavailable, match="no answer"):
        await DovecotAuth(fake.path, timeout=0.2).authenticate("alice@example.edu", "wonderland", client_ip="::1")


async def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(AuthUnavailable):
        await DovecotAuth(str(tmp_path / "nope")).authenticate("a", "b", client_ip="127.0.0.1")
