"""Checking SMTP AUTH credentials: the Authenticator protocol and the password file.

``authenticate`` answers True/False for good/bad credentials and raises
:class:`AuthUnavailable` when the back-end cannot answer (the SMTP server then says
``454 4.7.0`` and does not count a failure against the client). A slow back-end never
blocks other sessions: argon2 runs in a worker thread, Dovecot is spoken to over
asyncio.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from spamgate.proxy.errors import AuthUnavailable, PasswordFileError

__all__ = [
    "AuthUnavailable",
    "Authenticator",
    "PasswordFile",
    "PasswordFileError",
    "parse_password_file",
    "valid_username",
]

log = logging.getLogger("spamgate.auth")

# argon2 costs ~64 MiB and tens of ms per check: a few at a time keep memory bounded
# while a password-spraying client waits its turn instead of starving the machine.
MAX_CONCURRENT_VERIFY = 4


@runtime_checkable
class Authenticator(Protocol):
    async def authenticate(self, username: str, password: str, *, client_ip: str) -> bool: ...

    async def close(self) -> None: ...


def valid_username(username: str) -> bool:
    """A name we can store in ``user:hash`` lines and pass through SASL unchanged."""
    return bool(username) and not any(c in username for c in ":\0\t\r\n ") and username.isprintable()


def parse_password_file(text: str, source: str = "<passwd>") -> dict[str, str]:
    """``user:$argon2id$...`` lines (``#`` comments, blank lines) -> {lower-cased user: hash}."""
    users: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not valid_username(user) or not hashed.startswith("$argon2"):
            raise PasswordFileError(f"{source}:{lineno}: expected 'user:$argon2id$...'")
        users[user.lower()] = hashed
    return users


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


class PasswordFile:
    """Users and argon2id hashes from a file, re-read whenever it changes on disk.

    User names are case-insensitive. An unknown user costs as much as a known one
    (verified against a dummy hash) so response times don't reveal who exists.
    If a changed file cannot be parsed, the last good version stays in use.
    """

    def __init__(self, path: str | os.PathLike[str], hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self._hasher = hasher or PasswordHasher()
        self._dummy = self._hasher.hash("spamgate-dummy-password")
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_VERIFY)
        self._stamp: _Stamp | None = None
        self._users: dict[str, str] = {}
        self._reload(initial=True)

    @property
    def users(self) -> list[str]:
        return sorted(self._users)

    def _reload(self, initial: bool = False) -> None:
        try:
            st = os.stat(self.path)
            stamp = _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return
            users = parse_password_file(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, PasswordFileError) as exc:
            if initial:
                raise PasswordFileError(f"{self.path}: {exc}") from None
            log.error("password file not reloaded, keeping %d users: %s", len(self._users), exc)
            return
        if self._stamp is not None:
            log.info("password file %s reloaded: %d users", self.path, len(users))
        self._stamp, self._users = stamp, users

    def _check(self, username: str, password: str) -> bool:
        self._reload()
        hashed = self._users.get(username.lower())
        try:
            self._hasher.verify(hashed or self._dummy, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError) as exc:
            log.error("password file %s: bad hash for a user: %s", self.path, exc)
            return False
        return hashed is not None

    async def authenticate(self, username: str, password: str, *, client_ip: str) -> bool:
        if not valid_username(username):
            return False
        async with self._sem:
            return await asyncio.to_thread(self._check, username, password)

    async def close(self) -> None:
        pass
