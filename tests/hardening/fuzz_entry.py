"""Coverage-guided fuzz target (atheris/libFuzzer) for the parsers hostile input reaches first.

    python tests/hardening/fuzz_entry.py -runs=30000 tests/hardening/fuzz_corpus     # CI: seconds
    python tests/hardening/fuzz_entry.py -max_total_time=3600 -jobs=2 CORPUS_DIR       # on demand

The first input byte picks the entry point; ``check`` raises (a "crash") when a parser throws
something other than its documented refusal, or breaks an invariant. The same ``check`` is run
by hypothesis in tests/hardening/test_fuzz.py, so the target works where atheris does not.
Every crash found becomes a regression test (tests/hardening/test_regressions.py).
"""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import Coroutine
from email.errors import HeaderParseError
from typing import Any

try:
    import atheris
except ImportError:  # hypothesis drives check() without it
    atheris = None

if atheris is not None:
    # Coverage for our parsers and the libraries they lean on, not for everything they import.
    with atheris.instrument_imports(include=["proxy", "filters", "aiosmtpd", "email"]):
        from aiosmtpd.smtp import SMTP

        from spamgate.filters.sdk.api import HeaderRemoval
        from spamgate.proxy.message import _header_fields, canonicalize, format_header, strip_headers
        from spamgate.proxy.smtp import GateSMTP
        from spamgate.proxy.smtp_auth import AuthMixin
else:
    from aiosmtpd.smtp import SMTP

    from spamgate.filters.sdk.api import HeaderRemoval
    from spamgate.proxy.message import _header_fields, canonicalize, format_header, strip_headers
    from spamgate.proxy.smtp import GateSMTP
    from spamgate.proxy.smtp_auth import AuthMixin

_GATE: Any = object.__new__(GateSMTP)  # the parsers use no instance state
_REF: Any = object.__new__(SMTP)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never really suspends (the stubs below don't), without a loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("coroutine suspended")


class _AuthStub:
    def __init__(self) -> None:
        self.pushed: list[str] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def push(self, status: str) -> None:
        self.pushed.append(status)

    async def _auth_allowed(self) -> bool:
        return True

    async def _b64(self, value: str) -> bytes | None:
        return await AuthMixin._b64(self, value)  # type: ignore[arg-type]

    async def _login(self, mechanism: str, login: bytes, password: bytes) -> None:
        self.logins.append((login, password))


def _data(payload: bytes) -> None:
    canonical = canonicalize(payload)
    assert canonical.count(b"\r") == canonical.count(b"\n") == canonical.count(b"\r\n")
    assert canonicalize(canonical) == canonical
    stuffed = canonical.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    assert b"\r\n.\r\n" not in b"\r\n" + stuffed
    lines = stuffed.split(b"\r\n")
    assert b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines) == canonical


def _address(text: str) -> None:
    try:
        want = SMTP._getaddr(_REF, text)
    except (IndexError, AttributeError, UnboundLocalError, HeaderParseError):
        want = (None, None)
    assert GateSMTP._getaddr(_GATE, text) == want, text


def _mail_argument(text: str) -> None:
    """What smtp_MAIL does with its argument: keyword, address, ESMTP parameters."""
    arg = _GATE._strip_command_keyword("FROM:", "FROM:" + text)
    address, rest = GateSMTP._getaddr(_GATE, arg)
    if address is not None and rest is not None:
        _GATE._getparams(rest.upper().split())


def _headers(payload: bytes) -> None:
    fields = _header_fields(payload)
    assert strip_headers(payload, []) == payload
    if fields and fields[0][0].strip():
        # Removal compares the name without surrounding whitespace: "X-Spam-Flag : YES" (RFC 5322
        # obsolete syntax, which mail readers accept) is removed like "X-Spam-Flag: YES".
        victim = fields[0][0].strip()
        out = strip_headers(payload, [HeaderRemoval(victim)])
        assert all(n.strip().lower() != victim.lower() for n, _, _ in _header_fields(out))


def _format(text: str) -> None:
    name, _, value = text.partition(":")
    try:
        raw = format_header(name, value)
    except ValueError:
        return
    assert [f[0] for f in _header_fields(raw)] == [name], raw


def _auth(text: str) -> None:
    stub = _AuthStub()
    _run(AuthMixin.auth_PLAIN(stub, ["PLAIN", text]))  # type: ignore[arg-type]
    assert len(stub.pushed) + len(stub.logins) == 1, (stub.pushed, stub.logins)
    if stub.logins:
        blob = base64.b64decode(text, validate=True)
        assert blob.split(b"\x00")[1:] == list(stub.logins[0])


def check(data: bytes) -> None:
    if not data:
        return
    selector, payload = data[0] % 6, data[1:]
    text = payload.decode("utf-8", "surrogateescape")
    if selector == 0:
        _data(payload)
    elif selector == 1:
        _address(text)
    elif selector == 2:
        _mail_argument(text)
    elif selector == 3:
        _headers(payload)
    elif selector == 4:
        _format(text)
    else:
        _auth(text)


def main() -> None:
    assert atheris is not None, "pip install atheris (the test extras have it)"
    asyncio.get_event_loop_policy()  # import-time warm-up outside the fuzz loop
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
