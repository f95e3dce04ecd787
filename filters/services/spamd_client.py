"""A thin, typed wrapper around aiospamc for the two things spamgate asks spamd: scan and learn.

Why a wrapper at all:

* one :class:`aiospamc.client.Client` per settings, built without an SSL context
  (aiospamc's per-call helpers such as ``aiospamc.check()`` build a fresh SSL context
  on every call: ~112 ms of blocking CPU per message on the event loop, measured by
  tests/bench/bench_spamd_client.py, see docs/spamassassin.md);
* aiospamc leaves the socket open when a timeout cancels a request mid-read; the
  connection managers below always close it;
* aiospamc raises ~20 exception classes; callers here see one, :class:`SpamdError`,
  with a ``kind`` from a closed set (a metric label).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from aiospamc.client import Client
from aiospamc.connections import TcpConnectionManager, Timeout, UnixConnectionManager
from aiospamc.exceptions import AIOSpamcConnectionFailed, BadResponse, ClientException, TimeoutException
from aiospamc.header_values import ActionOption, MessageClassOption, MessageClassValue, SetOrRemoveValue
from aiospamc.requests import Request
from aiospamc.responses import ResponseException

from spamgate.filters.sdk.errors import DependencyError

__all__ = [
    "ErrorKind",
    "Rule",
    "SpamdClient",
    "SpamdError",
    "SpamdResult",
    "SpamdSettings",
    "parse_report",
    "parse_symbols",
]

ErrorKind = Literal["connect", "timeout", "protocol", "spamd"]


@dataclass(frozen=True)
class SpamdSettings:
    """Where spamd listens and how long to wait for it (``socket`` wins over host/port)."""

    host: str = "127.0.0.1"
    port: int = 783
    socket: str | None = None
    timeout: float = 8.0
    connect_timeout: float = 2.0

    @property
    def address(self) -> str:
        return f"unix:{self.socket}" if self.socket else f"{self.host}:{self.port}"


class SpamdError(DependencyError):
    """spamd could not be asked or gave no usable answer."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"spamd {kind}: {message}")
        self.kind: ErrorKind = kind


@dataclass(frozen=True)
class Rule:
    name: str
    score: float | None = None  # known only from a REPORT answer


@dataclass(frozen=True)
class SpamdResult:
    score: float
    threshold: float
    is_spam: bool
    rules: tuple[Rule, ...]


_REPORT_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\b", re.MULTILINE)
_RULE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def parse_report(text: str) -> tuple[Rule, ...]:
    """Rules and their points from the table at the end of a REPORT answer."""
    _, sep, table = text.partition("---- ----")
    if not sep:
        return ()
    return tuple(Rule(m.group(2), float(m.group(1))) for m in _REPORT_LINE.finditer(table))


def parse_symbols(text: str) -> tuple[Rule, ...]:
    names = (n.strip() for n in text.replace("\n", ",").split(","))
    return tuple(Rule(n) for n in names if n and _RULE_NAME.match(n))


async def _send_and_close(self: Any, data: bytes) -> bytes:
    """aiospamc's ``_send``, except the connection is closed even when cancelled."""
    reader, writer = await self._connect()
    try:
        writer.write(data)
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
        response: bytes = await self._receive(reader)
        return response
    finally:
        writer.close()


class _Tcp(TcpConnectionManager):  # type: ignore[misc]
    _send = _send_and_close


class _Unix(UnixConnectionManager):  # type: ignore[misc]
    _send = _send_and_close


class SpamdClient:
    """Scan and learn through one reusable aiospamc client."""

    def __init__(self, settings: SpamdSettings) -> None:
        self.settings = settings
        timeout = Timeout(total=settings.timeout, connection=settings.connect_timeout)
        manager: Any
        if settings.socket:
            manager = _Unix(settings.socket, timeout)
        else:
            manager = _Tcp(settings.host, settings.port, None, timeout)
        self._client = Client(manager)

    async def _request(self, req: Any) -> Any:
        try:
            return await self._client.request(req)
        except (TimeoutError, TimeoutException) as exc:
            msg = f"no answer from {self.settings.address} within {self.settings.timeout}s"
            raise SpamdError("timeout", msg) from exc
        except AIOSpamcConnectionFailed as exc:
            cause = exc.__cause__ or exc
            raise SpamdError("connect", f"{self.settings.address}: {cause}") from exc
        except ResponseException as exc:
            raise SpamdError("spamd", f"{self.settings.address} answered {exc}") from exc
        except (BadResponse, ClientException) as exc:
            raise SpamdError("protocol", f"{self.settings.address}: bad answer: {exc!r}") from exc
        except OSError as exc:
            raise SpamdError("connect", f"{self.settings.address}: {exc}") from exc

    async def scan(
        self, raw: bytes, mode: Literal["symbols", "report"] = "symbols", user: str | None = None
    ) -> SpamdResult:
        req = Request(mode.upper(), body=raw)
        if user:
            req.headers.user = user
        resp = await self._request(req)
        spam = resp.headers.spam
        if spam is None:
            raise SpamdError("protocol", f"{self.settings.address}: answer without a Spam header")
        text = resp.body.decode("utf-8", "replace")
        rules = parse_report(text) if mode == "report" else parse_symbols(text)
        return SpamdResult(float(spam.score), float(spam.threshold), bool(spam.value), rules)

    async def tell(self, raw: bytes, kind: Literal["spam", "ham"], user: str | None = None) -> bool:
        """Teach spamd's Bayes database; True if spamd says it learned (False: already known)."""
        req = Request(
            "TELL",
            headers={
                "Message-class": MessageClassValue(MessageClassOption(kind)),
                "Set": SetOrRemoveValue(ActionOption(local=True)),
            },
            body=raw,
        )
        if user:
            req.headers.user = user
        resp = await self._request(req)
        did_set = resp.headers.did_set
        return bool(did_set is not None and did_set.local)

    async def ping(self) -> None:
        await self._request(Request("PING"))
