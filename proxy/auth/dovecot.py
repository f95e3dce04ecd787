"""Check credentials against Dovecot's auth socket, the way Postfix does.

The protocol (Dovecot auth client protocol 1.x) is line-based, tab-separated::

    C: VERSION 1 2 / CPID <pid>
    S: VERSION 1 2, MECH ..., SPID, CUID, COOKIE, DONE
    C: AUTH <id> PLAIN service=smtp nologin rip=<ip> secured resp=<base64 \\0user\\0pass>
    S: OK <id> user=... | FAIL <id> [temp] [reason=...]

One short connection per check keeps failure handling trivial (a broken connection
never poisons later checks); a semaphore bounds how many run at once. Everything is
under one timeout. Dovecot delays FAIL replies on purpose (``auth_failure_delay``, 2 s,
and a per-client-IP penalty of up to 15 s after repeated failures, keyed by the
``rip`` we pass), so the default timeout is longer than that.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os

from spamgate.proxy.auth.credentials import AuthUnavailable, valid_username

__all__ = ["DovecotAuth"]

log = logging.getLogger("spamgate.auth")

MAX_LINE = 65536


class DovecotAuth:
    """An Authenticator backed by a Dovecot auth ``unix_listener`` socket."""

    def __init__(self, socket_path: str, *, timeout: float = 20.0, max_concurrent: int = 16) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sem = asyncio.Semaphore(max_concurrent)
        self._ids = itertools.count(1)

    async def authenticate(self, username: str, password: str, *, client_ip: str) -> bool:
        if not valid_username(username) or "\0" in password:
            return False
        async with self._sem:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._exchange(username, password, client_ip)
            except TimeoutError:
                raise AuthUnavailable(f"dovecot auth at {self.socket_path}: no answer in {self.timeout}s") from None
            except OSError as exc:
                raise AuthUnavailable(f"dovecot auth at {self.socket_path}: {exc}") from None

    async def _exchange(self, username: str, password: str, client_ip: str) -> bool:
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_LINE)
        try:
            writer.write(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
            mechs = await self._handshake(reader)
            if "PLAIN" not in mechs:
                raise AuthUnavailable("dovecot does not offer PLAIN (set auth_mechanisms = plain login)")
            req_id = next(self._ids)
            resp = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode()
            # spamgate enforces its own TLS policy before it ever asks, so the session counts
            # as secured for Dovecot's disable_plaintext_auth.
            params = ["service=smtp", "nologin", "secured", f"resp={resp}"]
            if client_ip and all(c not in client_ip for c in "\t\n"):
                params.insert(2, f"rip={client_ip}")
            writer.write(("\t".join(["AUTH", str(req_id), "PLAIN", *params]) + "\n").encode())
            await writer.drain()
            while True:
                fields = await _read_fields(reader)
                if len(fields) < 2 or fields[1] != str(req_id):
                    continue
                if fields[0] == "OK":
                    return True
                if fields[0] == "FAIL":
                    if "temp" in fields[2:]:
                        raise AuthUnavailable(f"dovecot: temporary failure {_reason(fields)}")
                    log.debug("dovecot auth failed %s", _reason(fields))
                    return False
                if fields[0] == "CONT":
                    raise AuthUnavailable("dovecot asked for more data on a PLAIN initial response")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    @staticmethod
    async def _handshake(reader: asyncio.StreamReader) -> set[str]:
        mechs: set[str] = set()
        version_ok = False
        while True:
            fields = await _read_fields(reader)
            if fields[0] == "VERSION":
                if len(fields) < 2 or fields[1] != "1":
                    raise AuthUnavailable(f"dovecot auth protocol version {fields[1:]} not supported")
                version_ok = True
            elif fields[0] == "MECH" and len(fields) > 1:
                mechs.add(fields[1].upper())
            elif fields[0] == "DONE":
                if not version_ok:
                    raise AuthUnavailable("dovecot auth handshake without VERSION")
                return mechs

    async def close(self) -> None:
        pass


async def _read_fields(reader: asyncio.StreamReader) -> list[str]:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        raise AuthUnavailable("dovecot closed the auth connection") from None
    except asyncio.LimitOverrunError:
        raise AuthUnavailable("dovecot sent an over-long line") from None
    return line.rstrip(b"\r\n").decode("utf-8", "replace").split("\t")


def _reason(fields: list[str]) -> str:
    return next((f for f in fields[2:] if f.startswith("reason=")), "")
