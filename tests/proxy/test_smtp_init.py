"""GateSMTP copies what aiosmtpd's own constructor builds (run once per listener setting), and is its handler."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from spamgate.filters.sdk.runner import Pipeline
from spamgate.proxy.config import parse_config
from spamgate.proxy.maildir import MaildirBackend
from spamgate.proxy.runtime import Runtime, SessionCounter
from spamgate.proxy.smtp import GateSMTP


class _Handler:
    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]: return responses


@pytest.fixture
async def gate(tmp_path: Any) -> GateSMTP:
    cfg = parse_config({"backend": {"url": f"maildir:{tmp_path}/md"},
                        "limits": {"max_command_line": 1000, "max_line_length": 2000}})
    rt = Runtime(cfg, Pipeline([]), MaildirBackend(f"{tmp_path}/md"), SessionCounter())
    return GateSMTP(rt, cfg.listen[0].label, None)


async def test_same_attributes_and_values_as_aiosmtpd_builds(gate: GateSMTP) -> None:
    reference = SMTP(GateSMTP, hostname=gate.hostname, ident=gate.__ident__, data_size_limit=gate.data_size_limit,
                     enable_SMTPUTF8=True, timeout=gate._timeout_duration)
    missing = set(vars(reference)) - set(vars(gate))
    assert not missing, f"aiosmtpd sets attributes GateSMTP does not: {sorted(missing)}"
    per_connection = {"_smtp_methods", "_auth_methods", "_handle_hooks", "loop", "command_size_limits"}
    for name, value in vars(reference).items():
        if not name.startswith("_stream") and not callable(value) and name not in per_connection and \
                not isinstance(value, asyncio.Future | asyncio.StreamReader | collections.deque):
            assert getattr(gate, name) == value, name
    assert set(gate._auth_methods) == set(reference._auth_methods) == {"LOGIN", "PLAIN"}
    assert gate._handle_hooks == reference._handle_hooks


async def test_every_command_aiosmtpd_knows_is_dispatched_through_the_gate(gate: GateSMTP) -> None:
    reference = SMTP(_Handler(), hostname="x")
    # PROXY is ours: a PROXY line from a client that is not a trusted balancer is refused.
    assert set(gate._smtp_methods) == set(reference._smtp_methods) | {"PROXY"}
    for command, method in gate._smtp_methods.items():
        if command == "PROXY":
            continue
        assert method.__self__ is gate, "bound to this connection, not to the template"
        assert method.__func__ is getattr(GateSMTP, f"smtp_{command}"), command
        assert method.__wrapped__ is getattr(SMTP, f"smtp_{command}"), "the wrapper keeps HELP's syntax"


async def test_commands_are_bound_at_first_use(gate: GateSMTP) -> None:
    table = gate._smtp_methods
    assert dict.__len__(table) == 0, "nothing bound before the first command"
    noop = table.get("NOOP")
    assert noop.__self__ is gate and table.get("NOOP") is noop
    assert dict.__len__(table) == 1
    assert table.get("NOSUCH") is None and "NOSUCH" not in table and "NOOP" in table
    with pytest.raises(KeyError):
        table["NOSUCH"]
    assert len(table) == len(list(table)) == len(table.items()) == len(dict(table.items()))


async def test_the_gate_class_is_the_handler(gate: GateSMTP) -> None:
    assert gate.event_handler is GateSMTP
    hooks = {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET"}
    # Plain functions: aiosmtpd passes the connection as their first argument.
    assert all(gate._handle_hooks[h] is getattr(GateSMTP, f"handle_{h}") for h in hooks)
    assert gate._ehlo_hook_ver == "new"
    assert gate._auth_methods["PLAIN"].method is GateSMTP.auth_PLAIN, "our async AUTH, not aiosmtpd's"
    assert gate._auth_methods["LOGIN"].method is GateSMTP.auth_LOGIN
    assert not any(m.is_builtin for m in gate._auth_methods.values()), "nothing bound to the template"


async def test_connections_do_not_share_their_state(gate: GateSMTP, tmp_path: Any) -> None:
    other = GateSMTP(gate.runtime, gate.listener_label, None)
    assert other._stream_reader is not gate._stream_reader
    assert other._closed is not gate._closed
    assert other.command_size_limits is not gate.command_size_limits
    assert other._smtp_methods is not gate._smtp_methods


async def test_limits_are_per_session(gate: GateSMTP) -> None:
    assert gate.line_length_limit == 2002 and gate._stream_reader._limit == 2002
    assert gate.command_size_limit == 1000 and gate.command_size_limits["MAIL"] == 1000
    assert gate.command_size_limits is not SMTP.command_size_limits


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
