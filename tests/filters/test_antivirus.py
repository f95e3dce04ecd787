"""The clamd client and the antivirus filter against a scripted fake clamd (protocol edge cases)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spamgate.filters.antivirus import AntivirusFilter
from spamgate.filters.antivirus.clamd import ClamdClient, ClamdError, ClamdSettings, ScanResult, parse_answer
from spamgate.filters.sdk.api import QUARANTINE_NOTE, Decision, FilterEnv, OptionError, Phase
from spamgate.filters.sdk.runner import FilterSettings, Pipeline, Scoreboard, Slot
from spamgate.filters.sdk.testing import make_context
from tests.filters.attachment_samples import EICAR
from tests.filters.fake_clamd import FakeClamd


def virus_if_eicar(data: bytes) -> bytes:
    return b"stream: Eicar-Test-Signature FOUND\0" if EICAR in data else b"stream: OK\0"


@pytest.fixture
async def clamd() -> AsyncIterator[FakeClamd]:
    fake = await FakeClamd(virus_if_eicar).start()
    yield fake
    await fake.stop()


def client(fake: FakeClamd, **kw: object) -> ClamdClient:
    return ClamdClient(ClamdSettings(port=fake.port, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "result"),
    [
        ("stream: OK", ScanResult("clean")),
        ("stream: Win.Test.EICAR_HDB-1 FOUND", ScanResult("virus", "Win.Test.EICAR_HDB-1")),
        ("stream: Eicar-Test-Signature.UNOFFICIAL FOUND", ScanResult("virus", "Eicar-Test-Signature.UNOFFICIAL")),
        ("INSTREAM size limit exceeded. ERROR", ScanResult("size")),
    ],
)
def test_parse_answer(answer: str, result: ScanResult) -> None:
    assert parse_answer(answer) == result


@pytest.mark.parametrize(("answer", "kind"), [("stream: lstat() failed. ERROR", "clamd"), ("HELLO", "protocol")])
def test_parse_answer_errors(answer: str, kind: str) -> None:
    with pytest.raises(ClamdError) as exc:
        parse_answer(answer)
    assert exc.value.kind == kind


async def test_instream_chunks_arrive_intact(clamd: FakeClamd) -> None:
    data = bytes(range(256)) * 1000  # several 64 KiB chunks
    assert await client(clamd).scan(data) == ScanResult("clean")
    assert clamd.streams == [data]
    assert await client(clamd).scan(b"x" + EICAR) == ScanResult("virus", "Eicar-Test-Signature")
    await client(clamd).ping()


async def test_unix_socket(tmp_path: Path) -> None:
    fake = await FakeClamd(virus_if_eicar).start(str(tmp_path / "clamd.sock"))
    try:
        c = ClamdClient(ClamdSettings(socket=str(tmp_path / "clamd.sock")))
        assert (await c.scan(EICAR)).status == "virus"
    finally:
        await fake.stop()


async def test_stream_max_length_is_a_result_not_an_error() -> None:
    fake = await FakeClamd(max_stream=100_000).start()
    try:
        assert await client(fake).scan(b"a" * 1_000_000) == ScanResult("size")
    finally:
        await fake.stop()


async def test_connection_refused_and_timeout_and_silent_close() -> None:
    with pytest.raises(ClamdError) as exc:
        await ClamdClient(ClamdSettings(port=1)).scan(b"x")
    assert exc.value.kind == "connect"
    hang = await FakeClamd(lambda d: None).start()
    silent = await FakeClamd(lambda d: b"").start()
    try:
        with pytest.raises(ClamdError) as exc:
            await client(hang, scan_timeout=0.2).scan(b"x")
        assert exc.value.kind == "timeout"
        with pytest.raises(ClamdError) as exc:
            await client(silent).scan(b"x")
        assert exc.value.kind == "protocol"
    finally:
        await hang.stop()
        await silent.stop()


async def test_connections_are_bounded() -> None:
    """Six scans, max_connections=2: clamd never sees more than two connections at once."""
    release = asyncio.Event()
    fake = FakeClamd()
    accepted = 0

    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await release.wait()
        await fake._handle(reader, writer)

    fake.server = await asyncio.start_server(held, "127.0.0.1", 0)
    try:
        c = client(fake, max_connections=2)
        tasks = [asyncio.create_task(c.scan(b"x")) for _ in range(6)]
        for _ in range(50):
            await asyncio.sleep(0.01)
            if accepted == 2:
                break
        await asyncio.sleep(0.05)
        assert accepted == 2
        release.set()
        assert [r.status for r in await asyncio.gather(*tasks)] == ["clean"] * 6
        assert accepted == 6 and fake.peak <= 2
    finally:
        await fake.stop()


def av(fake: FakeClamd | None, **options: object) -> AntivirusFilter:
    opts = {"port": fake.port if fake else 1, **options}
    return AntivirusFilter("antivirus", opts, FilterEnv())


async def test_filter_virus_clean_and_size(clamd: FakeClamd) -> None:
    flt = av(clamd, max_size=10_000)
    v = await flt.check(Phase.DATA, make_context(message=b"Subject: x\r\n\r\n" + EICAR + b"\r\n"))
    assert v.decision is Decision.REJECT
    assert str(v.reply) == "554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)"
    v = await flt.check(Phase.DATA, make_context(message=b"Subject: x\r\n\r\nhello\r\n"))
    assert v.decision is Decision.CONTINUE and [s.name for s in v.symbols] == ["AV_CLEAN"]
    assert v.add_headers[0][0] == "X-Spamgate-Antivirus" and v.add_headers[0][1].startswith("clean")
    v = await flt.check(Phase.DATA, make_context(message=b"Subject: x\r\n\r\n" + b"a" * 20_000))
    assert [(s.name, s.score) for s in v.symbols] == [("AV_SKIPPED_SIZE", 0.0)]
    assert len(clamd.streams) == 2  # the oversize message was never sent


async def test_filter_quarantine_asks_the_engine(clamd: FakeClamd) -> None:
    ctx = make_context(message=b"Subject: x\r\n\r\n" + EICAR)
    v = await av(clamd, action="quarantine").check(Phase.DATA, ctx)
    assert v.decision is Decision.CONTINUE and v.symbols[0].name == "AV_VIRUS"
    name, reply = ctx.notes[QUARANTINE_NOTE]
    assert name == "antivirus" and str(reply).startswith("554 5.7.1 Message rejected: virus found (")


@pytest.mark.parametrize("on_error", ["continue", "tempfail"])
async def test_clamd_down_follows_on_error_with_one_log_line(
    on_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    flt = av(None)
    pipe = Pipeline([Slot(flt, FilterSettings(on_error=on_error))])  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    for _ in range(5):
        result = await pipe.run(Phase.DATA, make_context(message=b"Subject: x\r\n\r\nhi\r\n"), Scoreboard())
        assert result.decision is (Decision.TEMPFAIL if on_error == "tempfail" else Decision.CONTINUE)
        assert [s.name for s in result.outcomes[0].verdict.symbols] == ["ANTIVIRUS_ERROR"]
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "state=down" in lines[0].getMessage(), [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records)
    with pytest.raises(ClamdError):
        await flt.check(Phase.DATA, make_context(message=b"Subject: x\r\n\r\nhi\r\n"))
    assert await flt.ready() is False


def test_bad_option_names_the_key() -> None:
    with pytest.raises(OptionError) as exc:
        AntivirusFilter("antivirus", {"hots": "x"}, FilterEnv())
    assert exc.value.key == "hots"
    with pytest.raises(OptionError) as exc:
        AntivirusFilter("antivirus", {"action": "delete"}, FilterEnv())
    assert exc.value.key == "action"
