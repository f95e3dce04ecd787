from __future__ import annotations

import argparse
import io
import stat
from pathlib import Path

import pytest

from spamgate.proxy.auth import PasswordFile
from spamgate.proxy.tools.passwd import register


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="spamgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    rc: int = args.func(args)
    return rc


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdin", buf)
    return buf


def feed(buf: io.StringIO, text: str) -> None:
    buf.seek(0)
    buf.truncate()
    buf.write(text)
    buf.seek(0)


async def test_add_list_remove_roundtrip(
    tmp_path: Path, stdin: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "etc" / "passwd"
    feed(stdin, "wonderland\n")
    assert cli("passwd", "add", "alice@example.edu", "--file", str(f)) == 0
    feed(stdin, "builder\n")
    assert cli("passwd", "add", "bob", "--file", str(f)) == 0
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    text = f.read_text()
    assert "wonderland" not in text and text.count("$argon2id$") == 2
    pf = PasswordFile(f)
    assert await pf.authenticate("alice@example.edu", "wonderland", client_ip="127.0.0.1")
    assert await pf.authenticate("bob", "builder", client_ip="127.0.0.1")

    feed(stdin, "new-secret\r\n")
    assert cli("passwd", "add", "ALICE@example.edu", "--file", str(f)) == 0
    assert "updated ALICE@example.edu" in capsys.readouterr().out
    assert await pf.authenticate("alice@example.edu", "new-secret", client_ip="127.0.0.1")
    assert not await pf.authenticate("alice@example.edu", "wonderland", client_ip="127.0.0.1")

    assert cli("passwd", "list", "--file", str(f)) == 0
    assert capsys.readouterr().out.split() == ["ALICE@example.edu", "bob"]

    assert cli("passwd", "remove", "bob", "--file", str(f)) == 0
    assert cli("passwd", "remove", "bob", "--file", str(f)) == 1
    assert "no user bob" in capsys.readouterr().err
    assert not await pf.authenticate("bob", "builder", client_ip="127.0.0.1")
    assert sorted(p.name for p in f.parent.iterdir()) == ["passwd"], "no temp files left behind"


def test_comments_survive_a_rewrite(tmp_path: Path, stdin: io.StringIO) -> None:
    f = tmp_path / "passwd"
    f.write_text("# managed by spamgate passwd\n")
    feed(stdin, "pw\n")
    assert cli("passwd", "add", "carol", "--file", str(f)) == 0
    assert f.read_text().startswith("# managed by spamgate passwd\ncarol:$argon2id$")


def test_refuses_bad_input(tmp_path: Path, stdin: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "passwd"
    feed(stdin, "pw\n")
    assert cli("passwd", "add", "bad:name", "--file", str(f)) == 1
    feed(stdin, "\n")
    assert cli("passwd", "add", "dave", "--file", str(f)) == 1
    assert "empty password" in capsys.readouterr().err
    assert not f.exists()
    f.write_text("garbage line\n")
    feed(stdin, "pw\n")
    assert cli("passwd", "add", "dave", "--file", str(f)) == 1, "never clobber a file we cannot parse"
    assert f.read_text() == "garbage line\n"
    assert cli("passwd", "list", "--file", str(tmp_path / "missing")) == 1


def test_tty_prompts_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty())
    answers = iter(["one", "two", "same", "same"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    f = tmp_path / "passwd"
    assert cli("passwd", "add", "erin", "--file", str(f)) == 1
    assert not f.exists()
    assert cli("passwd", "add", "erin", "--file", str(f)) == 0
    assert f.read_text().startswith("erin:$argon2id$")
