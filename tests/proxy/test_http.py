"""The /metrics, /healthz and /readyz endpoint, over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

import spamgate.proxy.metrics as m
from spamgate.proxy.http import HealthServer


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


async def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    return await request(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    srv = HealthServer("127.0.0.1", 0, check_timeout=0.2, cache_seconds=60)
    await srv.start()
    yield srv
    await srv.stop()


async def test_metrics_serves_the_default_registry(server: HealthServer) -> None:
    m.CONFIG_RELOADS.labels("ok").inc(0)
    status, headers, body = await get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE_LATEST
    assert int(headers["content-length"]) == len(body)
    assert b'spamgate_build_info{version="' in body
    assert b"spamgate_config_reloads_total" in body


async def test_healthz_is_ok_while_running(server: HealthServer) -> None:
    status, _, body = await get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")


async def test_readyz_without_checks_is_ready(server: HealthServer) -> None:
    status, _, body = await get(server.port, "/readyz")
    assert (status, body) == (200, b"ready\n")


async def test_readyz_names_every_failing_check(server: HealthServer) -> None:
    async def ok() -> bool:
        return True

    async def down() -> bool:
        return False

    async def slow() -> bool:
        await asyncio.sleep(30)
        return True

    async def broken() -> bool:
        raise OSError("connection refused")

    server.add_check("backend", ok)
    server.add_check("spamd", down)
    server.add_check("dns", slow)
    server.add_check("redis", broken)
    status, _, body = await get(server.port, "/readyz")
    assert status == 503
    assert body == b"not ready: dns (timeout), redis (error), spamd (failed)\n"


async def test_readiness_is_cached_and_shared_by_concurrent_probes(server: HealthServer) -> None:
    calls = 0

    async def counted() -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return True

    server.add_check("backend", counted)
    results = await asyncio.gather(*(get(server.port, "/readyz") for _ in range(5)))
    assert [r[0] for r in results] == [200] * 5
    assert calls == 1


async def test_cache_expires() -> None:
    srv = HealthServer("127.0.0.1", 0, cache_seconds=0)
    state = {"up": True}

    async def flips() -> bool:
        return state["up"]

    srv.add_check("backend", flips)
    await srv.start()
    try:
        assert (await get(srv.port, "/readyz"))[0] == 200
        state["up"] = False
        assert (await get(srv.port, "/readyz"))[0] == 503
    finally:
        await srv.stop()


async def test_unknown_path_method_and_garbage(server: HealthServer) -> None:
    assert (await get(server.port, "/nope"))[0] == 404
    status, headers, _ = await get(server.port, "/metrics", method="POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert (await request(server.port, b"hello\r\n\r\n"))[0] == 400


async def test_query_string_and_head(server: HealthServer) -> None:
    status, headers, body = await get(server.port, "/healthz?verbose=1", method="HEAD")
    assert status == 200
    assert headers["content-length"] == "3"
    assert body == b""


async def test_client_that_never_sends_does_not_block_others(server: HealthServer) -> None:
    _, idle = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert (await get(server.port, "/healthz"))[0] == 200
    finally:
        idle.close()
        await idle.wait_closed()


async def test_stop_closes_the_port_and_port_needs_start() -> None:
    srv = HealthServer("127.0.0.1", 0)
    with pytest.raises(RuntimeError):
        _ = srv.port
    await srv.start()
    port = srv.port
    _, lingering = await asyncio.open_connection("127.0.0.1", port)
    await srv.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    lingering.close()
    await srv.stop()
