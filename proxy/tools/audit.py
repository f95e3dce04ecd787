"""``spamgate audit HOST:PORT``: does this server let strangers send as local users?

Run it only against servers you operate. It automates the classic spoofing session
(``MAIL FROM:<postmaster@your.domain>`` from an unauthenticated client) and reports,
per check, Vulnerable or Secured. It stops before DATA unless ``--send`` is given, and
never sends anything for the open-relay check.

Exit status: 0 all secured, 1 something vulnerable, 2 the audit could not be completed
(connection failure, or a check was inconclusive).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from email.utils import formatdate
from typing import Any, Literal

from spamgate.proxy.tools.probe import Probe, ProbeError, SmtpReply

__all__ = ["AuditOptions", "CheckResult", "audit", "register", "run"]

Result = Literal["Vulnerable", "Secured", "Not tested", "Inconclusive"]

WARNING = "Run it only against servers you operate: it tries to spoof and to relay through the target."
EXTERNAL_FROM = "spamgate-audit@example.com"
EXTERNAL_RCPT = "spamgate-audit@example.net"


@dataclass(frozen=True)
class CheckResult:
    name: str
    result: Result
    detail: str


@dataclass(frozen=True)
class AuditOptions:
    host: str
    port: int
    local_domain: str
    mail_from: str | None = None
    rcpt: str | None = None
    send: bool = False
    timeout: float = 15.0
    verify_tls: bool = False
    implicit_tls: bool = False
    helo: str = "spamgate-audit.invalid"

    @property
    def spoofed_sender(self) -> str:
        return self.mail_from or f"postmaster@{self.local_domain}"

    @property
    def local_rcpt(self) -> str:
        return self.rcpt or f"postmaster@{self.local_domain}"


def _tls_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _verdict(reply: SmtpReply) -> Result:
    if reply.ok:
        return "Vulnerable"
    return "Secured" if reply.code >= 500 else "Inconclusive"


async def _envelope(p: Probe, opts: AuditOptions, mail_from: str, rcpt: str) -> tuple[Result, str]:
    """MAIL + RCPT: Vulnerable when both were accepted."""
    await p.ehlo(opts.helo)
    mail = await p.command(f"MAIL FROM:<{mail_from}>")
    detail = f"MAIL FROM:<{mail_from}> -> {mail}"
    if not mail.ok:
        return _verdict(mail), detail
    rc = await p.command(f"RCPT TO:<{rcpt}>")
    detail += f"; RCPT TO:<{rcpt}> -> {rc}"
    return _verdict(rc), detail


async def check_tls(opts: AuditOptions) -> list[CheckResult]:
    ctx = _tls_context(opts.verify_tls)
    async with Probe(opts.host, opts.port, timeout=opts.timeout, tls=ctx if opts.implicit_tls else None) as p:
        await p.ehlo(opts.helo)
        mechs = p.auth_mechanisms
        if opts.implicit_tls:
            auth = CheckResult("auth_before_tls", "Secured", "implicit TLS: nothing is sent in clear")
            return [auth, CheckResult("starttls", "Secured", f"implicit TLS: {p.tls_info}")]
        clear = sorted(mechs & {"PLAIN", "LOGIN"})
        if clear:
            auth = CheckResult("auth_before_tls", "Vulnerable", f"AUTH {' '.join(clear)} offered without TLS")
        else:
            auth = CheckResult("auth_before_tls", "Secured", "no plaintext AUTH offered before TLS")
        if "STARTTLS" not in p.extensions:
            return [auth, CheckResult("starttls", "Vulnerable", "STARTTLS not offered")]
        try:
            reply = await p.starttls(ctx)
        except ProbeError as exc:
            return [auth, CheckResult("starttls", "Vulnerable", str(exc))]
        if reply.code != 220:
            return [auth, CheckResult("starttls", "Vulnerable", f"STARTTLS -> {reply}")]
        await p.ehlo(opts.helo)
        after = " ".join(sorted(p.auth_mechanisms)) or "none"
        return [auth, CheckResult("starttls", "Secured", f"{p.tls_info}; AUTH after TLS: {after}")]


async def check_spoofable(opts: AuditOptions) -> CheckResult:
    async with Probe(opts.host, opts.port, timeout=opts.timeout) as p:
        result, detail = await _envelope(p, opts, opts.spoofed_sender, opts.local_rcpt)
        await p.command("RSET")
    return CheckResult("spoofable_sender", result, detail)


async def check_open_relay(opts: AuditOptions) -> CheckResult:
    async with Probe(opts.host, opts.port, timeout=opts.timeout) as p:
        result, detail = await _envelope(p, opts, EXTERNAL_FROM, EXTERNAL_RCPT)
        await p.command("RSET")
    return CheckResult("open_relay", result, detail)


def audit_message(opts: AuditOptions) -> bytes:
    return (
        f'From: "spamgate audit" <{opts.spoofed_sender}>\r\n'
        f"To: <{opts.local_rcpt}>\r\n"
        f"Subject: [spamgate audit] spoofing test message - safe to delete\r\n"
        f"Date: {formatdate(localtime=True)}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@spamgate-audit.invalid>\r\n"
        "X-Spamgate-Audit: header-spoof test\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is a test message sent by `spamgate audit --send`.\r\n"
        f"An unauthenticated client sent it with the forged header From: {opts.spoofed_sender}\r\n"
        f"and the envelope sender {EXTERNAL_FROM}. If it reached you, your server lets\r\n"
        "strangers impersonate local users in the From: header.\r\n"
    ).encode()


async def check_header_spoof(opts: AuditOptions) -> CheckResult:
    if not opts.send:
        return CheckResult("header_spoof", "Not tested", "needs --send (delivers one marked test message)")
    async with Probe(opts.host, opts.port, timeout=opts.timeout) as p:
        result, detail = await _envelope(p, opts, EXTERNAL_FROM, opts.local_rcpt)
        if result != "Vulnerable":
            return CheckResult("header_spoof", "Inconclusive", f"envelope refused before DATA: {detail}")
        reply = await p.send_data(audit_message(opts))
    return CheckResult("header_spoof", _verdict(reply), f"DATA with From: <{opts.spoofed_sender}> -> {reply}")


async def audit(opts: AuditOptions) -> tuple[str, list[CheckResult]]:
    """Run every check; returns the banner and the results (raises ProbeError if unreachable)."""
    tls = _tls_context(opts.verify_tls) if opts.implicit_tls else None
    async with Probe(opts.host, opts.port, timeout=opts.timeout, tls=tls) as p:
        if p.banner.code != 220:
            raise ProbeError(f"server refused the session: {p.banner}")
        banner = str(p.banner)
    results: list[CheckResult] = []
    for step, names in _STEPS:
        try:
            got = await step(opts)
        except ProbeError as exc:
            got = [CheckResult(n, "Inconclusive", str(exc)) for n in names]
        results.extend(got if isinstance(got, list) else [got])
    return banner, results


_STEPS: list[tuple[Callable[[AuditOptions], Awaitable[CheckResult | list[CheckResult]]], tuple[str, ...]]] = [
    (check_tls, ("auth_before_tls", "starttls")),
    (check_spoofable, ("spoofable_sender",)),
    (check_open_relay, ("open_relay",)),
    (check_header_spoof, ("header_spoof",)),
]


def exit_status(results: list[CheckResult]) -> int:
    if any(r.result == "Vulnerable" for r in results):
        return 1
    return 2 if any(r.result == "Inconclusive" for r in results) else 0


def render_table(target: str, banner: str, results: list[CheckResult]) -> str:
    rows = [("CHECK", "RESULT", "DETAIL"), *((r.name, r.result, r.detail) for r in results)]
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    lines = [f"spamgate audit of {target}", f"banner: {banner}", ""]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def _target(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, 25
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST or HOST:PORT, got {value!r}")
    return host, int(port)


def register(sub: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "audit",
        help="check a mail server for spoofing, open relaying and AUTH without TLS",
        description=f"Probe an SMTP server the way a spoofer would. WARNING: {WARNING}",
        epilog="Exit status: 0 all secured, 1 something vulnerable, 2 could not complete.",
    )
    p.add_argument("target", metavar="HOST:PORT", type=_target, help="server to audit (port 25 if omitted)")
    p.add_argument("--local-domain", required=True, help="a domain the server receives mail for")
    p.add_argument("--from", dest="mail_from", help="sender to spoof (default postmaster@LOCAL_DOMAIN)")
    p.add_argument("--rcpt", help="local recipient (default postmaster@LOCAL_DOMAIN)")
    p.add_argument("--send", action="store_true", help="go past DATA once: send one marked test message")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per connection and reply (default 15)")
    p.add_argument("--verify-tls", action="store_true", help="verify the server certificate")
    p.add_argument("--implicit-tls", action="store_true", help="the port speaks TLS from the start (465)")
    p.add_argument("--helo", default=socket.getfqdn(), help="EHLO name (default: this host's FQDN)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    host, port = args.target
    opts = AuditOptions(
        host,
        port,
        args.local_domain.lower(),
        args.mail_from,
        args.rcpt,
        args.send,
        args.timeout,
        args.verify_tls,
        args.implicit_tls,
        args.helo,
    )
    target = f"{host}:{port}"
    try:
        banner, results = asyncio.run(audit(opts))
    except ProbeError as exc:
        if args.json:
            print(json.dumps({"target": target, "error": str(exc)}))
        else:
            print(f"spamgate audit: {exc}", file=sys.stderr)
        return 2
    status = exit_status(results)
    if args.json:
        doc = {"target": target, "banner": banner, "vulnerable": status == 1, "checks": [asdict(r) for r in results]}
        print(json.dumps(doc, indent=2))
    else:
        print(render_table(target, banner, results))
    return status
