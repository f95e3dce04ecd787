"""``spamgate dkim keygen``: a key sender_auth can load, a record dkimpy can verify against."""

from __future__ import annotations

import argparse
import re
import stat
from pathlib import Path

import dkim
import pytest

from spamgate.filters.sender_auth.dkim_sign import load_signing_key, sign_message
from spamgate.proxy.tools.dkim_keygen import dns_record, register


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spamgate")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def record_value(zone_line: str) -> str:
    """The TXT value a resolver hands out: the quoted strings concatenated."""
    return "".join(re.findall(r'"([^"]*)"', zone_line))


@pytest.mark.parametrize(("algorithm", "bits"), [("rsa", "1024"), ("rsa", "2048"), ("ed25519", "0")])
def test_keygen_writes_key_and_prints_record(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             algorithm: str, bits: str) -> None:
    rc = run(["dkim", "keygen", "Example.EDU", "sg1", "--out-dir", str(tmp_path), "--algorithm", algorithm,
              "--bits", bits])
    assert rc == 0
    key_path = tmp_path / "example.edu.sg1.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if not ln.startswith(";"))
    assert line.startswith("sg1._domainkey.example.edu. IN TXT ( ")
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', line))
    txt = record_value(line)
    assert txt.startswith(f"v=DKIM1; k={algorithm}; p=")
    key = load_signing_key("example.edu", "sg1", key_path)
    msg = b"From: a@example.edu\r\nSubject: t\r\n\r\nbody\r\n"
    signed = f"DKIM-Signature: {sign_message(msg, key)}\r\n".encode() + msg
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: txt.encode())


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.pem"
    key.write_text("precious")
    assert run(["dkim", "keygen", "example.edu", "s", "--key", str(key)]) == 1
    assert key.read_text() == "precious"
    assert "exists" in capsys.readouterr().err
    assert run(["dkim", "keygen", "example.edu", "s", "--key", str(key), "--force", "--bits", "1024"]) == 0
    assert "RSA PRIVATE KEY" in key.read_text()


@pytest.mark.parametrize("argv", [["example.edu", "s", "--bits", "512"], ["nodot", "s"]])
def test_keygen_rejects_bad_input(tmp_path: Path, argv: list[str]) -> None:
    assert run(["dkim", "keygen", *argv, "--out-dir", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_dns_record_splits_long_values() -> None:
    line = dns_record("example.edu", "s", "v=DKIM1; p=" + "A" * 600, ttl=300)
    assert line.startswith("s._domainkey.example.edu. 300 IN TXT ( ")
    assert [len(s) for s in re.findall(r'"([^"]*)"', line)] == [250, 250, 111]
