from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Literal

import pytest
from argon2 import PasswordHasher

from spamgate.proxy.auth import Authenticator, DovecotAuth, PasswordFile, PasswordFileError, make_authenticator
from spamgate.proxy.auth.credentials import parse_password_file, valid_username
from spamgate.proxy.config import Auth

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def write(path: Path, users: dict[str, str], extra: str = "") -> None:
    lines = ["# spamgate users", *[f"{u}:{FAST.hash(p)}" for u, p in users.items()]]
    path.write_text("\n".join(lines) + "\n" + extra)


@pytest.fixture
def pwfile(tmp_path: Path) -> Path:
    p = tmp_path / "passwd"
    write(p, {"alice@example.edu": "wonderland", "bob": "builder"})
    return p


async def test_good_and_bad_passwords(pwfile: Path) -> None:
    pf = PasswordFile(pwfile, FAST)
    assert isinstance(pf, Authenticator)
    assert pf.users == ["alice@example.edu", "bob"]
    assert await pf.authenticate("alice@example.edu", "wonderland", client_ip="192.0.2.1")
    assert await pf.authenticate("ALICE@Example.edu", "wonderland", client_ip="192.0.2.1")
    assert not await pf.authenticate("alice@example.edu", "Wonderland", client_ip="192.0.2.1")
    assert not await pf.authenticate("nobody", "wonderland", client_ip="192.0.2.1")
    assert not await pf.authenticate("bad:name", "builder", client_ip="192.0.2.1")
    assert not await pf.authenticate("", "", client_ip="192.0.2.1")
    await pf.close()


class SpyHasher(PasswordHasher):
    seen: list[str]

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.seen.append(str(hash))
        return super().verify(hash, password)


async def test_unknown_user_still_runs_a_verification(pwfile: Path) -> None:
    spy = SpyHasher(time_cost=1, memory_cost=8, parallelism=1)
    spy.seen = []
    pf = PasswordFile(pwfile, spy)
    assert not await pf.authenticate("mallory", "spamgate-dummy-password", client_ip="192.0.2.1")
    assert len(spy.seen) == 1 and spy.seen[0].startswith("$argon2id$")


async def test_checks_run_concurrently_off_the_loop(pwfile: Path) -> None:
    pf = PasswordFile(pwfile, FAST)
    results = await asyncio.gather(
        *(pf.authenticate("bob", pw, client_ip="192.0.2.1") for pw in ["builder", "x", "builder", "y"] * 3)
    )
    assert results == [True, False, True, False] * 3


async def test_reload_on_change(pwfile: Path) -> None:
    pf = PasswordFile(pwfile, FAST)
    assert not await pf.authenticate("carol", "secret", client_ip="192.0.2.1")
    write(pwfile, {"alice@example.edu": "changed", "carol": "secret"})
    assert await pf.authenticate("carol", "secret", client_ip="192.0.2.1")
    assert not await pf.authenticate("alice@example.edu", "wonderland", client_ip="192.0.2.1")
    assert await pf.authenticate("alice@example.edu", "changed", client_ip="192.0.2.1")
    assert not await pf.authenticate("bob", "builder", client_ip="192.0.2.1")


async def test_broken_reload_keeps_last_good_version(pwfile: Path, caplog: pytest.LogCaptureFixture) -> None:
    pf = PasswordFile(pwfile, FAST)
    await asyncio.to_thread(pwfile.write_text, "this line is garbage\n")
    with caplog.at_level(logging.ERROR, "spamgate.auth"):
        assert await pf.authenticate("bob", "builder", client_ip="192.0.2.1")
    assert "not reloaded" in caplog.text and "passwd:1" in caplog.text
    await asyncio.to_thread(pwfile.unlink)
    assert await pf.authenticate("bob", "builder", client_ip="192.0.2.1")


def test_missing_or_bad_file_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match="missing"):
        PasswordFile(tmp_path / "missing", FAST)
    bad = tmp_path / "bad"
    bad.write_text("alice:plaintext\n")
    with pytest.raises(PasswordFileError, match="bad:1"):
        PasswordFile(bad, FAST)


def test_parse_and_username_rules() -> None:
    h = FAST.hash("x")
    assert parse_password_file(f"\n# c\nAlice:{h}\n") == {"alice": h}
    for name in ["a b", "a:b", "a\tb", "", "a\x00b"]:
        assert not valid_username(name), name
    assert valid_username("alice@example.edu")


def test_factory(pwfile: Path) -> None:
    assert make_authenticator(Auth()) is None
    assert isinstance(make_authenticator(Auth(backend="file", password_file=str(pwfile))), PasswordFile)
    dv = make_authenticator(Auth(backend="dovecot", dovecot_socket="/run/dovecot/auth-client"))
    assert isinstance(dv, DovecotAuth) and dv.socket_path == "/run/dovecot/auth-client"
