"""spamgate audit against in-process aiosmtpd servers: one wide open, one locked down.

(The real thing, against Postfix and spamgate, is tests/integration/test_audit.py.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from spamgate.proxy.tools import audit as audit_mod
from spamgate.proxy.tools.audit import AuditOptions, CheckResult, audit, exit_status, render_table
from tests.integration.services.testca import make_ca


@dataclass
class Handler:
    secure: bool
    messages: list[bytes] = field(default_factory=list)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        if self.secure and address.endswith("@example.edu"):
            return f"553 5.7.1 <{address}>: Sender address rejected: not logged in"
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any) -> str:
        if self.secure and not address.endswith("@example.edu"):
            return "554 5.7.1 Relay access denied"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if self.secure and b'From: "spamgate audit" <postmaster@example.edu>' in content:
            return "550 5.7.1 local From: needs authentication"
        self.messages.append(content)
        return "250 2.0.0 queued"


def deny_all(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    return AuthResult(success=False)


@dataclass
class Server:
    port: int
    handler: Handler


@pytest.fixture
async def smtp_server(tmp_path: Path) -> AsyncIterator[Callable[[bool], Any]]:
    ca = make_ca(tmp_path / "ca")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(ca.cert, ca.key)
    servers: list[asyncio.Server] = []

    async def start(secure: bool) -> Server:
        handler = Handler(secure)
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(
            lambda: SMTP(
                handler,
                hostname="fake.test",
                tls_context=tls if secure else None,
                authenticator=deny_all,
                auth_require_tls=secure,
            ),
            "127.0.0.1",
            0,
        )
        servers.append(srv)
        return Server(srv.sockets[0].getsockname()[1], handler)

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def opts(port: int, **kw: Any) -> AuditOptions:
    return AuditOptions("127.0.0.1", port, "example.edu", timeout=5, helo="audit.test", **kw)


def by_name(results: list[CheckResult]) -> dict[str, str]:
    return {r.name: r.result for r in results}


async def test_open_server_is_vulnerable(smtp_server: Callable[[bool], Any]) -> None:
    srv: Server = await smtp_server(False)
    banner, results = await audit(opts(srv.port))
    assert banner.startswith("220 fake.test")
    assert by_name(results) == {
        "auth_before_tls": "Vulnerable",
        "starttls": "Vulnerable",
        "spoofable_sender": "Vulnerable",
        "open_relay": "Vulnerable",
        "header_spoof": "Not tested",
    }
    assert exit_status(results) == 1
    assert srv.handler.messages == [], "no DATA without --send"


async def test_secure_server_is_secured(smtp_server: Callable[[bool], Any]) -> None:
    srv: Server = await smtp_server(True)
    _, results = await audit(opts(srv.port, send=True))
    assert by_name(results) == {
        "auth_before_tls": "Secured",
        "starttls": "Secured",
        "spoofable_sender": "Secured",
        "open_relay": "Secured",
        "header_spoof": "Secured",
    }
    details = {r.name: r.detail for r in results}
    assert "TLSv1." in details["starttls"] and "LOGIN" in details["starttls"]
    assert "553 5.7.1 <postmaster@example.edu>: Sender address rejected" in details["spoofable_sender"]
    assert exit_status(results) == 0
    assert srv.handler.messages == []


async def test_send_delivers_one_marked_message(smtp_server: Callable[[bool], Any]) -> None:
    srv: Server = await smtp_server(False)
    _, results = await audit(opts(srv.port, send=True, rcpt="professor@example.edu"))
    assert by_name(results)["header_spoof"] == "Vulnerable"
    assert len(srv.handler.messages) == 1
    msg = srv.handler.messages[0]
    assert b"X-Spamgate-Audit: header-spoof test" in msg
    assert b"To: <professor@example.edu>" in msg


async def test_verify_tls_fails_against_an_untrusted_ca(smtp_server: Callable[[bool], Any]) -> None:
    srv: Server = await smtp_server(True)
    _, results = await audit(opts(srv.port, verify_tls=True))
    starttls = next(r for r in results if r.name == "starttls")
    assert starttls.result == "Vulnerable" and "handshake failed" in starttls.detail


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spamgate")
    audit_mod.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))


async def test_cli_json_and_table(smtp_server: Callable[[bool], Any], capsys: pytest.CaptureFixture[str]) -> None:
    srv: Server = await smtp_server(False)
    args = parse("audit", f"127.0.0.1:{srv.port}", "--local-domain", "Example.EDU", "--json", "--timeout", "5")
    assert await asyncio.to_thread(args.func, args) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["vulnerable"] is True and doc["target"] == f"127.0.0.1:{srv.port}"
    assert {c["name"]: c["result"] for c in doc["checks"]}["open_relay"] == "Vulnerable"
    args = parse("audit", f"127.0.0.1:{srv.port}", "--local-domain", "example.edu")
    assert await asyncio.to_thread(args.func, args) == 1
    out = capsys.readouterr().out
    assert "spoofable_sender  Vulnerable" in out and "RESULT" in out


def test_cli_unreachable_and_bad_target(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = parse("audit", f"127.0.0.1:{port}", "--local-domain", "example.edu", "--timeout", "2")
    assert args.func(args) == 2
    assert "cannot connect" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("audit", "127.0.0.1:notaport", "--local-domain", "example.edu")
    assert parse("audit", "mx.example.edu", "--local-domain", "example.edu").target == ("mx.example.edu", 25)


def test_help_warns(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("audit", "--help")
    assert "only against servers you operate" in " ".join(capsys.readouterr().out.split())


def test_render_table() -> None:
    out = render_table("h:25", "220 hi", [CheckResult("open_relay", "Secured", "554 no")])
    assert out.splitlines()[-1] == "open_relay  Secured  554 no"
