"""The Redis state store: several spamgate instances counting together.

It implements the :class:`~spamgate.filters.sdk.state.StateStore` contract on redis-py's
asyncio client, with one connection pool per store (so per process):

* ``incr``: one Lua script (INCRBY, then PEXPIRE only if the key has no expiry yet), one
  round trip and atomic, so a key can never be left counting without a TTL and concurrent
  instances never lose an increment;
* ``set_if_absent``: ``SET key value NX PX ttl``; ``set``: ``SET key value PX ttl``.

URLs (``[state] url``)::

    redis://[[user]:password@]host[:port][/db]          plain TCP
    rediss://[[user]:password@]host[:port][/db]         TLS (redis-py's ssl_* query options work)
    redis+sentinel://[:password@]host:port[,host:port...]/service[/db]

Sentinel is a URL scheme of our own (redis-py has none): the comma-separated hosts are the
sentinels, the first path segment the monitored service, the optional second the db, and the
password (if any) is the master's. redis-py asks the sentinels for the current master and
follows fail-overs.

Every failure (refused, timed out, protocol error, fail-over in progress) raises
:class:`StateError` after at most one quick retry, within ``timeout`` seconds; the caller
applies its ``on_state_error``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from spamgate.filters.sdk.state import StateError

__all__ = ["RedisStore", "parse_sentinel_url"]

# KEYS[1] key; ARGV[1] amount; ARGV[2] ttl in ms. PTTL < 0: the key is new (or has no expiry).
_INCR_LUA = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """``redis+sentinel://[:pw@]h1:p1,h2:p2/service[/db]`` → (sentinels, service, db, password)."""
    rest = url.removeprefix("redis+sentinel://")
    password = None
    if "@" in rest.split("/", 1)[0]:
        cred, rest = rest.split("@", 1)
        password = unquote(cred.split(":", 1)[-1]) or None
    hosts, _, path = rest.partition("/")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ValueError(f"bad sentinel address {item!r}")
        sentinels.append((host, int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("expected redis+sentinel://host:port[,host:port]/service[/db]")
    return sentinels, parts[0], int(parts[1]) if len(parts) == 2 else 0, password


class RedisStore:
    """A :class:`StateStore` on Redis; keys are ``key_prefix + key``."""

    def __init__(self, url: str, key_prefix: str = "spamgate:", timeout: float = 1.0) -> None:
        self.url = url
        self.prefix = key_prefix
        self.timeout = timeout
        # One retry, no backoff: it replaces a pooled connection that died (Redis restarted)
        # without turning an outage into seconds of waiting per call.
        common: dict[str, Any] = {
            "socket_timeout": timeout, "socket_connect_timeout": timeout, "decode_responses": True,
            "retry": Retry(NoBackoff(), 1), "health_check_interval": 30,
        }
        self._sentinel: Sentinel | None = None
        if url.startswith("redis+sentinel://"):
            sentinels, service, db, password = parse_sentinel_url(url)
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                sentinels, sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout}, **common
            )
            self.client: aioredis.Redis = self._sentinel.master_for(service, db=db, password=password)
        elif url.startswith(("redis://", "rediss://", "unix://")):
            self.client = aioredis.Redis.from_url(url, **common)
        else:
            raise ValueError("url must start with redis://, rediss://, unix:// or redis+sentinel://")
        self._incr = self.client.register_script(_INCR_LUA)

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout * 3):  # connect + command + the one retry
                return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateError(f"redis {what}: {type(exc).__name__}: {exc}") from None

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        return int(await self._call("incr", self._incr(keys=[self.prefix + key], args=[amount, _ms(ttl)])))

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._call("set", self.client.set(self.prefix + key, value, nx=True, px=_ms(ttl))))

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._call("set", self.client.set(self.prefix + key, value, px=_ms(ttl)))

    async def get(self, key: str) -> str | None:
        value = await self._call("get", self.client.get(self.prefix + key))
        return None if value is None else str(value)

    async def delete(self, key: str) -> None:
        await self._call("delete", self.client.delete(self.prefix + key))

    async def ping(self) -> bool:
        """For /readyz: never raises."""
        try:
            return bool(await self._call("ping", self.client.ping()))
        except StateError:
            return False

    async def close(self) -> None:
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
