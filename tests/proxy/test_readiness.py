"""Which readiness checks a config gets, and how they fail (real loopback sockets)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from proxy.config import parse_config
from proxy.readiness import dependency_checks, dns_answers, spamd_pongs


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_dependencies_without_filters() -> None:
    assert dependency_checks(parse_config({})) == {}


def test_disabled_filters_get_no_check() -> None:
    cfg = parse_config({"filters": {"spamassassin": {"enabled": False}, "rbl": {"enabled": False}}})
    assert dependency_checks(cfg) == {}


def test_spamd_and_dns_checks_follow_the_enabled_filters() -> None:
    cfg = parse_config({"filters": {"spamassassin": {"enabled": True, "port": 7830}, "sender_auth": {"enabled": True}}})
    assert set(dependency_checks(cfg)) == {"spamd", "dns"}
    cfg = parse_config({"filters": {"rbl": {"enabled": True}}})
    assert set(dependency_checks(cfg)) == {"dns"}


async def test_spamd_check_raises_when_nothing_listens() -> None:
    with pytest.raises(OSError):
        await spamd_pongs("127.0.0.1", closed_port())


async def test_spamd_check_is_false_for_a_non_spamd_server() -> None:
    async def smtpish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 not spamd\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(smtpish, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await spamd_pongs("127.0.0.1", port) is False
    finally:
        server.close()
        await server.wait_closed()


async def test_dns_check_is_false_when_the_resolver_is_silent() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        assert await dns_answers("127.0.0.1", silent.getsockname()[1], seconds=0.3) is False


async def test_checks_built_from_config_use_its_addresses() -> None:
    port = closed_port()
    cfg = parse_config({"filters": {"spamassassin": {"enabled": True, "port": port}}})
    with pytest.raises(OSError):
        await dependency_checks(cfg)["spamd"]()
