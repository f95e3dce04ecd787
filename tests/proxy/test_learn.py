from __future__ import annotations

import argparse
import asyncio
import mailbox
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spamgate.filters.sdk.api import Learner
from spamgate.filters.services.spamd_client import SpamdError
from spamgate.proxy.config import parse_config
from spamgate.proxy.pipeline import PluginError, learner_from
from spamgate.proxy.tools.learn import iter_messages, register
from tests.filters.fake_spamd import FakeSpamd, spamd_reply

LEARNED = spamd_reply(spam=None, extra="DidSet: local\r\n")
KNOWN = spamd_reply(spam=None)

MSG1 = b"From: a@example.org\nSubject: one\n\nfirst body\n"
MSG2 = b"From: b@example.org\nSubject: two\n\nsecond body\nFrom the start of a line\n"


class ThreadedFake:
    """A FakeSpamd on its own event loop thread, for the synchronous CLI entry point."""

    def __init__(self, reply: bytes) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeSpamd(reply=reply)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeSpamd:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def learned() -> Iterator[FakeSpamd]:
    with ThreadedFake(LEARNED) as fake:
        yield fake


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="spamgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["learn", *argv])
    rc: int = args.func(args)
    return rc


def write_mbox(path: Path) -> None:
    box = mailbox.mbox(path)
    for m in (MSG1, MSG2):
        box.add(m)
    box.close()


def write_maildir(path: Path) -> None:
    md = mailbox.Maildir(path, create=True)
    md.add(MSG1)
    md.add(MSG2)


# --- reading sources ------------------------------------------------------------------


def test_iter_messages_file_mbox_maildir_and_directory(tmp_path: Path) -> None:
    single = tmp_path / "one.eml"
    single.write_bytes(MSG1)
    write_mbox(tmp_path / "box.mbox")
    write_maildir(tmp_path / "Maildir")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "b.eml").write_bytes(MSG2)
    (plain / "a.eml").write_bytes(MSG1)
    (plain / ".hidden").write_bytes(b"not a message")

    assert [raw for _, raw in iter_messages(single)] == [MSG1]
    box = [raw for _, raw in iter_messages(tmp_path / "box.mbox")]
    assert len(box) == 2
    assert box[0].startswith(b"From: a@example.org") and b"Subject: one" in box[0]
    assert b">From the start" in box[1]  # mbox quoting survives; the From_ separator does not
    assert sorted(raw for _, raw in iter_messages(tmp_path / "Maildir")) == sorted([MSG1, MSG2])
    assert [raw for _, raw in iter_messages(plain)] == [MSG1, MSG2]


# --- the Learner protocol (what quarantine release calls) -------------------------------


def _learner(**options: object) -> Learner:
    return learner_from(None, "spamassassin", dict(options))


async def test_learner_reports_learned_known_and_too_big() -> None:
    fake = await FakeSpamd(reply=LEARNED).start()
    try:
        assert await _learner(port=fake.port).learn(MSG1, "ham") == "learned"
        fake.reply = KNOWN
        assert await _learner(port=fake.port, user="alice").learn(MSG1, "ham") == "known"
        assert await _learner(port=fake.port, max_size=10).learn(MSG1, "ham") == "too_big"
        assert len(fake.requests) == 2  # the too-big one never reached spamd
        first, second = fake.requests
        assert (first.verb, first.headers["Message-class"], first.headers["Set"]) == ("TELL", "ham", "local")
        assert "User" not in first.headers and second.headers["User"] == "alice"
        assert first.body == MSG1
    finally:
        await fake.close()


async def test_learner_raises_when_spamd_is_down() -> None:
    fake = await FakeSpamd().start()
    port = fake.port
    await fake.close()
    with pytest.raises(SpamdError) as err:
        await _learner(port=port).learn(MSG1, "spam")
    assert err.value.kind == "connect"


def test_a_filter_that_cannot_learn_is_named() -> None:
    with pytest.raises(PluginError, match="filter 'headers' cannot learn"):
        learner_from(parse_config({}), "headers")


# --- the CLI ----------------------------------------------------------------------------


def test_cli_learns_an_mbox_as_spam(learned: FakeSpamd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_mbox(tmp_path / "spam.mbox")
    assert cli("--spam", "--port", str(learned.port), "-v", str(tmp_path / "spam.mbox")) == 0
    out = capsys.readouterr().out
    assert "spam: 2 learned, 0 already known, 0 skipped (too big), 0 failed" in out
    assert [r.headers["Message-class"] for r in learned.requests] == ["spam", "spam"]


def test_cli_reads_spamd_address_and_user_from_config(
    learned: FakeSpamd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text(f'[filters.spamassassin]\nenabled = true\nport = {learned.port}\nuser = "bayes"\n')
    write_maildir(tmp_path / "Maildir")
    assert cli("--ham", "--config", str(cfg), str(tmp_path / "Maildir")) == 0
    assert [(r.headers["Message-class"], r.headers["User"]) for r in learned.requests] == [("ham", "bayes")] * 2
    assert "ham: 2 learned" in capsys.readouterr().out


def test_cli_flags_win_over_config(learned: FakeSpamd, tmp_path: Path) -> None:
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text("[filters.spamassassin]\nport = 1\n")
    (tmp_path / "m.eml").write_bytes(MSG1)
    assert cli("--spam", "--config", str(cfg), "--port", str(learned.port), str(tmp_path / "m.eml")) == 0
    assert len(learned.requests) == 1


def test_cli_counts_known_and_oversize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.eml").write_bytes(MSG1)
    (tmp_path / "big.eml").write_bytes(MSG2 + b"x" * 100 + b"\n")
    with ThreadedFake(KNOWN) as fake:
        assert cli("--ham", "--port", str(fake.port), "--max-size", "100", str(tmp_path)) == 0
        assert len(fake.requests) == 1
    captured = capsys.readouterr()
    assert "ham: 0 learned, 1 already known, 1 skipped (too big), 0 failed" in captured.out
    assert "big.eml: skipped" in captured.err


def test_cli_fails_when_spamd_is_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadedFake(LEARNED) as fake:
        port = fake.port
    (tmp_path / "m.eml").write_bytes(MSG1)
    assert cli("--spam", "--port", str(port), str(tmp_path / "m.eml")) == 1
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and "spamd connect" in captured.err


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("--spam", str(tmp_path / "nope")) == 2
    assert "no such file" in capsys.readouterr().err
    cfg = tmp_path / "spamgate.toml"
    cfg.write_text('[filters.spamassassin]\nprot = 783\n')
    (tmp_path / "m.eml").write_bytes(MSG1)
    assert cli("--spam", "--config", str(cfg), str(tmp_path / "m.eml")) == 2
    assert "[filters.spamassassin].prot" in capsys.readouterr().err


def test_cli_needs_exactly_one_kind(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cli(str(tmp_path))
    with pytest.raises(SystemExit):
        cli("--spam", "--ham", str(tmp_path))
