"""GateSMTP sets up what aiosmtpd's own SMTP.__init__ would, without its per-connection reflection."""

from __future__ import annotations

from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from spamgate.filters.sdk.runner import Pipeline
from spamgate.proxy.config import parse_config
from spamgate.proxy.maildir import MaildirBackend
from spamgate.proxy.runtime import Runtime, SessionCounter
from spamgate.proxy.smtp import GateSMTP


class _Handler:
    async def handle_HELO(self, *a: Any) -> str: return "250"
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]: return responses
    async def handle_MAIL(self, *a: Any) -> str: return "250"
    async def handle_RCPT(self, *a: Any) -> str: return "250"
    async def handle_DATA(self, *a: Any) -> str: return "250"
    async def handle_RSET(self, *a: Any) -> str: return "250"
    async def handle_exception(self, error: Exception) -> str: return "451"


@pytest.fixture
async def gate(tmp_path: Any) -> GateSMTP:
    cfg = parse_config({"backend": {"url": f"maildir:{tmp_path}/md"}})
    rt = Runtime(cfg, Pipeline([]), MaildirBackend(f"{tmp_path}/md"), SessionCounter())
    return GateSMTP(rt, cfg.listen[0].label, None)


async def test_same_attributes_as_aiosmtpd(gate: GateSMTP) -> None:
    reference = SMTP(_Handler(), hostname="x", enable_SMTPUTF8=True)
    missing = set(vars(reference)) - set(vars(gate))
    assert not missing, f"aiosmtpd sets attributes GateSMTP does not: {sorted(missing)}"
    assert set(reference._handle_hooks) <= set(gate._handle_hooks)
    assert set(reference._auth_methods) == set(gate._auth_methods) == {"LOGIN", "PLAIN"}
    assert gate._ehlo_hook_ver == reference._ehlo_hook_ver == "new"


async def test_every_command_aiosmtpd_knows_is_dispatched(gate: GateSMTP) -> None:
    reference = SMTP(_Handler(), hostname="x")
    for command in reference._smtp_methods:
        assert gate._smtp_methods.get(command) is not None, command
    assert gate._smtp_methods.get("BOGUS") is None


@pytest.mark.parametrize(
    ("arg", "addr", "rest"),
    [
        ("<alice@example.edu>", "alice@example.edu", ""),
        ("<a.b+tag@mail.example.edu> SIZE=100", "a.b+tag@mail.example.edu", " SIZE=100"),
        ('<"quoted local"@example.edu>', "\"quoted local\"@example.edu", ""),
        ("<>", "<>", ""),
        ("alice@example.edu", "alice@example.edu", ""),
        ("<user@[192.0.2.1]>", "user@[192.0.2.1]", ""),
    ],
)
async def test_fast_address_parser_agrees_with_aiosmtpd(gate: GateSMTP, arg: str, addr: str, rest: str) -> None:
    reference = SMTP(_Handler(), hostname="x")
    assert gate._getaddr(arg) == reference._getaddr(arg)
    got_addr, got_rest = gate._getaddr(arg)
    assert got_addr == addr and (got_rest or "").strip() == rest.strip()
