"""RedisStore against a real redis-server: the StateStore contract, atomicity, outage and recovery."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from spamgate.filters.sdk.state import StateError, StateStore
from spamgate.proxy.state_redis import RedisStore, parse_sentinel_url
from tests.integration.services.postfix import free_port, wait_port
from tests.integration.services.process import stop_process
from tests.integration.services.redis import REDIS_SERVER, RedisServer, running_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


async def test_the_contract(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, key_prefix="t1:")
    assert isinstance(store, StateStore)
    try:
        assert await store.incr("n", ttl=60) == 1
        assert await store.incr("n", ttl=60, amount=4) == 5
        assert await store.set_if_absent("flag", "a", ttl=60) is True
        assert await store.set_if_absent("flag", "b", ttl=60) is False
        assert await store.get("flag") == "a"
        await store.set("flag", "c", ttl=60)
        assert await store.get("flag") == "c"
        await store.delete("flag")
        assert await store.get("flag") is None
        assert await store.get("never") is None
        assert await store.ping()
        # The prefix is really used: another prefix sees nothing.
        other = RedisStore(redis_server.url, key_prefix="t2:")
        assert await other.get("n") is None
        await other.close()
    finally:
        await store.close()


async def test_keys_expire_and_incr_keeps_the_first_ttl(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, key_prefix="t3:")
    try:
        await store.incr("c", ttl=0.5)
        await store.set("s", "x", ttl=0.5)
        assert await store.incr("c", ttl=60) == 2
        assert 0 < await store.client.pttl("t3:c") <= 500  # the second incr did not extend the window
        await asyncio.sleep(0.6)
        assert await store.get("s") is None
        assert await store.get("c") is None
        assert await store.incr("c", ttl=60) == 1
        assert 500 < await store.client.pttl("t3:c") <= 60_000
    finally:
        await store.close()


async def test_concurrent_increments_from_two_stores_are_all_counted(redis_server: RedisServer) -> None:
    a, b = RedisStore(redis_server.url, key_prefix="t4:"), RedisStore(redis_server.url, key_prefix="t4:")
    try:
        results = await asyncio.gather(*(s.incr("k", ttl=60) for s in [a, b] * 100))
        assert sorted(results) == list(range(1, 201))
    finally:
        await a.close()
        await b.close()


async def test_redis_down_is_a_state_error_then_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    store = RedisStore(server.url, timeout=0.5)
    try:
        assert await store.incr("k", ttl=60) == 1
        server.stop()
        for call in (store.incr("k", ttl=60), store.get("k"), store.set_if_absent("k", "v", 60),
                     store.set("k", "v", 60), store.delete("k")):
            with pytest.raises(StateError, match="redis"):
                await call
        assert await store.ping() is False
        server.start()  # same port, empty (no persistence): the pooled connections are stale
        assert await store.incr("k", ttl=60) == 1
        assert await store.ping()
    finally:
        await store.close()
        server.stop()


def test_an_unreachable_redis_fails_within_the_timeout() -> None:
    # A port nothing listens on: refused at once, after the single retry.
    async def go() -> None:
        store = RedisStore("redis://127.0.0.1:9/0", timeout=0.2)
        try:
            with pytest.raises(StateError):
                await store.get("x")
        finally:
            await store.close()

    asyncio.run(go())


def test_sentinel_urls() -> None:
    assert parse_sentinel_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster/2") == (
        [("10.0.0.1", 26379), ("10.0.0.2", 26380)], "mymaster", 2, None)
    assert parse_sentinel_url("redis+sentinel://:s3cret@sentinel/mymaster") == (
        [("sentinel", 26379)], "mymaster", 0, "s3cret")
    for bad in ("redis+sentinel://h:1", "redis+sentinel://h:x/m", "redis+sentinel://h:1/m/x"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)
    with pytest.raises(ValueError, match="url must start"):
        RedisStore("http://localhost/")


@pytest.fixture
def sentinel_port(redis_server: RedisServer, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor spamgate 127.0.0.1 {redis_server.port} 1\n")
    with open(tmp_path / "sentinel.log", "wb") as log:
        proc = subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, 10)
        yield port
    finally:
        stop_process(proc)


async def test_sentinel_finds_the_master(redis_server: RedisServer, sentinel_port: int) -> None:
    store = RedisStore(f"redis+sentinel://127.0.0.1:{sentinel_port}/spamgate/0", key_prefix="t5:")
    try:
        assert await store.incr("via-sentinel", ttl=60) == 1
    finally:
        await store.close()
    direct = RedisStore(redis_server.url, key_prefix="t5:")
    assert await direct.get("via-sentinel") == "1"
    await direct.close()
