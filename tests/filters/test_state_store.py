"""The in-memory StateStore: atomic counters and flags that expire."""

from __future__ import annotations

from spamgate.filters.sdk.state import MemoryStore, StateStore
from spamgate.filters.sdk.testing import FakeClock


async def test_incr_starts_at_zero_and_expires_from_first_use() -> None:
    clock = FakeClock(100.0)
    s = MemoryStore(clock=clock)
    assert isinstance(s, StateStore)
    assert await s.incr("k", ttl=10) == 1
    clock.now += 6
    assert await s.incr("k", ttl=10, amount=2) == 3  # the window is not extended
    clock.now += 5
    assert await s.get("k") is None
    assert await s.incr("k", ttl=10) == 1


async def test_set_if_absent_get_set_delete() -> None:
    clock = FakeClock(100.0)
    s = MemoryStore(clock=clock)
    assert await s.set_if_absent("grey", "first", ttl=5) is True
    assert await s.set_if_absent("grey", "second", ttl=5) is False
    assert await s.get("grey") == "first"
    clock.now += 5
    assert await s.set_if_absent("grey", "third", ttl=5) is True
    await s.set("grey", "fourth", ttl=1)
    assert await s.get("grey") == "fourth"
    await s.delete("grey")
    assert await s.get("grey") is None


async def test_bounded_oldest_first() -> None:
    s = MemoryStore(max_entries=3)
    for i in range(5):
        await s.set(f"k{i}", "v", ttl=100)
    assert len(s) == 3
    assert [await s.get(f"k{i}") for i in range(5)] == [None, None, "v", "v", "v"]
