"""DovecotAuth against a real Dovecot (dovecot-core) with a passwd-file passdb."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from spamgate.proxy.auth import AuthUnavailable, DovecotAuth, make_authenticator
from spamgate.proxy.config import Auth
from tests.integration.services.dovecot import Dovecot, start_dovecot

USERS = {"alice@example.edu": "wonderland", "bob@example.edu": "b0b: with spaces & ümlauts"}


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    dv = start_dovecot(USERS)
    try:
        yield dv
    finally:
        dv.close()


async def test_good_password_ok(dovecot: Dovecot) -> None:
    auth = make_authenticator(Auth(backend="dovecot", dovecot_socket=dovecot.socket_path))
    assert isinstance(auth, DovecotAuth)
    assert await auth.authenticate("alice@example.edu", "wonderland", client_ip="127.0.0.1")
    assert await auth.authenticate("Alice@Example.EDU", "wonderland", client_ip="127.0.0.1"), "auth_username_format=%Lu"
    assert await auth.authenticate("bob@example.edu", USERS["bob@example.edu"], client_ip="::1")


async def test_bad_password_and_unknown_user_fail(dovecot: Dovecot) -> None:
    # Distinct client IPs: Dovecot slows down repeated failures from one IP by seconds.
    auth = DovecotAuth(dovecot.socket_path, timeout=20)
    assert not await auth.authenticate("alice@example.edu", "Wonderland", client_ip="127.0.1.1")
    assert not await auth.authenticate("alice@example.edu", "", client_ip="127.0.1.2")
    assert not await auth.authenticate("mallory@example.edu", "wonderland", client_ip="127.0.1.3")


async def test_many_concurrent_checks(dovecot: Dovecot) -> None:
    auth = DovecotAuth(dovecot.socket_path, timeout=20, max_concurrent=8)
    got = await asyncio.gather(
        *(
            auth.authenticate("alice@example.edu", pw, client_ip=f"127.0.2.{i}")
            for i, pw in enumerate(["wonderland", "nope"] * 20)
        )
    )
    assert got == [True, False] * 20


async def test_stopped_dovecot_is_unavailable_not_a_wrong_password() -> None:
    dv = start_dovecot(USERS)
    try:
        auth = DovecotAuth(dv.socket_path, timeout=5)
        assert await auth.authenticate("alice@example.edu", "wonderland", client_ip="127.0.0.1")
        await asyncio.to_thread(dv.stop)
        with pytest.raises(AuthUnavailable):
            await auth.authenticate("alice@example.edu", "wonderland", client_ip="127.0.0.1")
    finally:
        await asyncio.to_thread(dv.close)
