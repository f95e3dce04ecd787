"""The one Received line: spamd is shown exactly the trace header the relayed message carries.

spamgate is started from a minimal config (listen, a Maildir backend and the one filter
table); spamd is the scripted fake so the bytes it was sent can be compared (the real
spamd is tested in test_spamassassin.py). Before issue 12 the filter built its own copy,
which disagreed with the engine's (ESMTPA vs ESMTPSA, the "for <rcpt>" clause).
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.filters.fake_spamd import FakeSpamd
from tests.integration.conftest import Spamgate
from tests.integration.services.postfix import free_port


@pytest.fixture
async def spamd() -> AsyncIterator[FakeSpamd]:
    fake = await FakeSpamd().start()
    yield fake
    await fake.close()


def _received(message: bytes) -> bytes:
    """The first Received field (with its folded lines); the Maildir adds Return-Path above it."""
    lines = message.split(b"\r\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Received: "))
    end = start + 1
    while lines[end][:1] in (b" ", b"\t"):
        end += 1
    return b"\r\n".join(lines[start:end]) + b"\r\n"


async def test_spamd_sees_the_received_line_that_is_relayed(spamd: FakeSpamd, tmp_path: Path) -> None:
    maildir = tmp_path / "maildir"
    port = free_port()
    config = (
        f'[[listen]]\nhost = "127.0.0.1"\nport = {port}\n\n'
        f'[backend]\nurl = "maildir:{maildir}"\n\n'
        f'[server]\nstate_dir = "{tmp_path}/state"\n\n'
        "[dns]\nreverse_lookup = false\n\n"  # no resolver on this machine's loopback
        f"[metrics]\nenabled = false\n\n"
        f"[filters.spamassassin]\nenabled = true\nport = {spamd.port}\n"
    )
    sg = Spamgate(tmp_path, config, port, 0, 0)
    await asyncio.to_thread(sg.start)
    try:
        def send() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("client.example.org")
                client.sendmail("a@example.org", ["user@example.edu"], b"Subject: hi\r\n\r\nhello\r\n")

        await asyncio.to_thread(send)
    finally:
        await asyncio.to_thread(sg.stop)
    [stored] = list((maildir / "new").iterdir())
    relayed = stored.read_bytes().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
    assert len(spamd.requests) == 1
    seen = spamd.requests[0].body
    assert seen.startswith(b"Received: ")  # our hop first, as SpamAssassin expects
    assert _received(seen) == _received(relayed)
    assert b"for <user@example.edu>" in _received(seen)
    assert seen.endswith(b"Subject: hi\r\n\r\nhello\r\n")
