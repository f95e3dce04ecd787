"""The engine's use of the StateStore seam: session counts, what a store outage does, who owns the store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from spamgate.filters.sdk.outage import Outage
from spamgate.filters.sdk.state import MemoryStore, StateError
from spamgate.proxy.auth import PenaltyBox
from spamgate.proxy.config import ConfigError, parse_config
from spamgate.proxy.pipeline import filter_env
from spamgate.proxy.runtime import SessionCounter
from spamgate.proxy.server import Server
from spamgate.proxy.state import GuardedStore

log = logging.getLogger("test.state")


class DownStore(MemoryStore):
    """A shared store that has gone away (what a Redis outage looks like to the engine)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        if self.down:
            raise StateError("connection refused")
        return await super().incr(key, ttl, amount)

    async def get(self, key: str) -> str | None:
        if self.down:
            raise ConnectionRefusedError("connection refused")  # an OSError that slipped through
        return await super().get(key)

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        if self.down:
            raise TimeoutError
        return await super().set_if_absent(key, value, ttl)


def _errors(operation: str) -> float:
    return REGISTRY.get_sample_value("spamgate_state_errors_total", {"operation": operation}) or 0.0


def _strict(store: MemoryStore) -> GuardedStore:
    return GuardedStore(store, Outage("state store", log), "raise")


async def test_session_counts_per_ip_add_up_across_counters_on_one_store() -> None:
    shared = MemoryStore()
    a, b = SessionCounter(store=_strict(shared)), SessionCounter(store=_strict(shared))  # two instances
    assert await a.open("192.0.2.1") == (1, True)
    assert await b.open("192.0.2.1") == (2, True)
    assert await b.open("192.0.2.9") == (1, True)
    assert (a.total, b.total, a.per_ip["192.0.2.1"], b.per_ip["192.0.2.1"]) == (1, 2, 1, 1), "local: per process"
    a.remove("192.0.2.1")
    await a.release("192.0.2.1")
    assert await a.open("192.0.2.1") == (2, True), "the disconnect was counted down in the store"
    assert a.total == 1
    for counter, ip in ((a, "192.0.2.1"), (b, "192.0.2.1"), (b, "192.0.2.9")):
        counter.remove(ip)
        await counter.release(ip)
    assert len(shared) == 0, "a count that reaches zero leaves the store"


async def test_a_store_outage_never_blocks_a_session_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.state")
    store = DownStore()
    counter = SessionCounter(store=_strict(store))
    before = _errors("incr")
    results = [await counter.open("192.0.2.1") for _ in range(3)]
    assert results == [(1, False), (2, False), (3, False)], "the local count decides, not counted in the store"
    assert _errors("incr") == before + 3
    store.down = False
    assert await counter.open("192.0.2.1") == (4, True), "never below this process's own count"
    lines = [r.getMessage() for r in caplog.records if r.name == "test.state"]
    assert len([x for x in lines if "state=down" in x]) == 1, lines
    assert len([x for x in lines if "state=recovered" in x]) == 1, lines


async def test_engine_view_continues_locally_and_strict_view_raises() -> None:
    store = DownStore()
    outage = Outage("state store", log)
    engine, strict = GuardedStore(store, outage, "continue"), GuardedStore(store, outage, "raise")
    before = (_errors("get"), _errors("set_if_absent"))
    box = PenaltyBox(engine, 2, window=60, penalty=600)
    assert not await box.record_failure("192.0.2.1")
    assert await box.record_failure("192.0.2.1"), "boxing still works, on the local fallback"
    assert await box.is_blocked("192.0.2.1")
    assert (_errors("get"), _errors("set_if_absent")) > before
    with pytest.raises(StateError):
        await strict.get("k")
    with pytest.raises(StateError):
        await strict.incr("k", 60)
    assert outage.down


def _cfg(tmp_path: Path, **state: object) -> dict[str, object]:
    return {
        "server": {"state_dir": str(tmp_path / "state")}, "backend": {"url": f"maildir:{tmp_path}/md"},
        "listen": [{"port": 0}], "metrics": {"enabled": False}, "dns": {"reverse_lookup": False},
        **({"state": state} if state else {}),
    }  # fmt: skip


async def test_the_server_owns_the_store_and_a_reload_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "sg.toml"
    path.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n[backend]\nurl = "maildir:{tmp_path}/md"\n'
                    '[metrics]\nenabled = false\n[dns]\nreverse_lookup = false\n[auth]\nmax_failures = 1\n')
    from spamgate.proxy.config import load_config

    srv = Server(load_config(path), str(path))
    old = srv.runtime
    assert srv.runtime.penalties is not None
    await srv.runtime.penalties.record_failure("192.0.2.1")
    assert await srv.reload()
    assert srv.runtime is not old
    assert srv.runtime.penalties is old.penalties and srv.runtime.counter is old.counter
    assert await srv.runtime.penalties.is_blocked("192.0.2.1")
    # The memory store is this process's alone: sessions per IP are its own count, no store call.
    assert srv.runtime.counter.store is None and not srv.state.shared
    path.write_text(path.read_text() + '[state]\nkey_prefix = "other:"\n')
    assert not await srv.reload(), "changing [state] needs a restart"
    await old.pipeline.close()


def test_state_config_and_filter_env(tmp_path: Path) -> None:
    cfg = parse_config(_cfg(tmp_path))
    assert (cfg.state.backend, cfg.state.key_prefix, cfg.state.timeout) == ("memory", "spamgate:", 0.5)
    store = MemoryStore()
    env = filter_env(cfg, store)
    assert env.state is store
    assert env == filter_env(cfg) and hash(env) == hash(filter_env(cfg)), "the store is not part of equality"
    for bad in ({"colour": "blue"}, {"timeout": 0}, {"backend": "etcd"}):
        with pytest.raises(ConfigError, match=r"state\."):
            parse_config(_cfg(tmp_path, **bad))
    with pytest.raises(ConfigError, match=r"state: backend 'redis' needs url"):
        parse_config(_cfg(tmp_path, backend="redis"))
