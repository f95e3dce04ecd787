"""Readiness checks for /readyz: is each enabled dependency answering right now?

``dependency_checks(cfg)`` returns one check per dependency the config enables, beyond
the backend (whose check is the relay's own ping): ``spamd`` when the spamassassin
filter is on (a SPAMD ``PING``), ``dns`` when a DNS-using filter is on (any answer from
the first resolver, even REFUSED, proves it is reachable). Each check is cheap; the
HealthServer runs them concurrently under its own timeout and caches the results.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import dns.asyncquery
import dns.exception
import dns.message

from proxy.config import Config

__all__ = ["DNS_FILTERS", "dependency_checks", "dns_answers", "spamd_pongs"]

ReadinessCheck = Callable[[], Awaitable[bool]]

# Filters that resolve names through [dns]; the engine's shared resolver serves them all.
DNS_FILTERS = frozenset({"rbl", "sender_auth"})


async def spamd_pongs(host: str, port: int, socket_path: str | None = None) -> bool:
    """True if spamd answers ``PING`` with ``PONG`` (SPAMD protocol 1.5)."""
    if socket_path is not None:
        reader, writer = await asyncio.open_unix_connection(socket_path)
    else:
        reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"PING SPAMC/1.5\r\n\r\n")
        await writer.drain()
        line = await reader.readline()
        return line.startswith(b"SPAMD/") and line.rstrip().endswith(b"PONG")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def dns_answers(nameserver: str, port: int, seconds: float = 2.0) -> bool:
    """True if the resolver answers a query for the root's SOA with any response code."""
    query = dns.message.make_query(".", "SOA")
    try:
        await dns.asyncquery.udp(query, nameserver, timeout=seconds, port=port)
    except dns.exception.Timeout:
        return False
    return True


def dependency_checks(cfg: Config) -> dict[str, ReadinessCheck]:
    checks: dict[str, ReadinessCheck] = {}
    enabled = cfg.enabled_filters
    sa = enabled.get("spamassassin")
    if sa is not None:
        opts = sa.options
        host, port = str(opts.get("host", "127.0.0.1")), int(opts.get("port", 783))
        sock = opts.get("socket")
        checks["spamd"] = lambda: spamd_pongs(host, port, str(sock) if sock else None)
    if DNS_FILTERS & set(enabled):
        ns, dport, timeout = cfg.dns.nameservers[0], cfg.dns.port, cfg.dns.timeout
        checks["dns"] = lambda: dns_answers(ns, dport, timeout)
    return checks
