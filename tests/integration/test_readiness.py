"""Readiness checks against a real spamd and a real NSD, and through the HealthServer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config import parse_config
from proxy.http import HealthServer
from proxy.readiness import dependency_checks, dns_answers, spamd_pongs
from tests.integration.rbl_zones import ZONES
from tests.integration.services.dns import DnsServer, start_dns
from tests.integration.services.spamd import Spamd, start_spamd

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    server = start_spamd(tmp_path_factory.mktemp("spamd"), children=1)
    yield server
    server.close()


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = start_dns(ZONES, tmp_path_factory.mktemp("nsd"))
    yield server
    server.stop()


async def test_real_spamd_pongs(spamd: Spamd) -> None:
    assert await spamd_pongs("127.0.0.1", spamd.port) is True


async def test_real_nsd_answers_even_for_a_zone_it_does_not_serve(nsd: DnsServer) -> None:
    assert await dns_answers(nsd.host, nsd.port) is True


async def get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_readyz_follows_spamd(spamd: Spamd, nsd: DnsServer, tmp_path: Path) -> None:
    cfg = parse_config({
        "dns": {"nameservers": [nsd.host], "port": nsd.port},
        "filters": {"spamassassin": {"enabled": True, "port": spamd.port}, "rbl": {"enabled": True}},
    })  # fmt: skip
    srv = HealthServer("127.0.0.1", 0, cache_seconds=0)
    for name, check in dependency_checks(cfg).items():
        srv.add_check(name, check)
    await srv.start()
    try:
        assert await get(srv.port, "/readyz") == (200, b"ready\n")
        await asyncio.to_thread(spamd.stop)
        try:
            assert await get(srv.port, "/readyz") == (503, b"not ready: spamd (error)\n")
        finally:
            await asyncio.to_thread(spamd.start)
        assert await get(srv.port, "/readyz") == (200, b"ready\n")
    finally:
        await srv.stop()
