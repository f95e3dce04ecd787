"""The penalty box on the StateStore: failures counted with incr+TTL, a block flag with a TTL."""

from __future__ import annotations

import pytest

from spamgate.filters.sdk.state import MemoryStore
from spamgate.filters.sdk.testing import FakeClock
from spamgate.proxy.auth import PenaltyBox, make_penalty_box
from spamgate.proxy.auth.penalty import client_key
from spamgate.proxy.config import Auth


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


async def test_boxed_after_max_failures_in_window(clock: FakeClock, store: MemoryStore) -> None:
    box = PenaltyBox(store, 3, window=60, penalty=600)
    assert not await box.record_failure("192.0.2.1")
    assert not await box.record_failure("192.0.2.1")
    assert not await box.is_blocked("192.0.2.1")
    assert await box.record_failure("192.0.2.1")
    assert await box.is_blocked("192.0.2.1")
    assert not await box.is_blocked("192.0.2.2")
    assert not await box.record_failure("192.0.2.1"), "already boxed: not a new boxing"
    clock.now += 599
    assert await box.is_blocked("192.0.2.1")
    clock.now += 2
    assert not await box.is_blocked("192.0.2.1")
    assert not await box.record_failure("192.0.2.1"), "the count starts afresh after the penalty"


async def test_failures_outside_the_window_are_forgotten(clock: FakeClock, store: MemoryStore) -> None:
    box = PenaltyBox(store, 3, window=60, penalty=600)
    await box.record_failure("192.0.2.1")
    await box.record_failure("192.0.2.1")
    clock.now += 61
    assert not await box.record_failure("192.0.2.1")
    assert not await box.record_failure("192.0.2.1")
    assert await box.record_failure("192.0.2.1")


async def test_success_resets_the_count_but_not_a_running_penalty(store: MemoryStore) -> None:
    box = PenaltyBox(store, 2, window=60, penalty=600)
    await box.record_failure("192.0.2.1")
    await box.record_success("192.0.2.1")
    assert not await box.record_failure("192.0.2.1")
    assert await box.record_failure("192.0.2.1")
    await box.record_success("192.0.2.1")
    assert await box.is_blocked("192.0.2.1")


async def test_ipv6_counted_per_64(store: MemoryStore) -> None:
    box = PenaltyBox(store, 2, window=60, penalty=600)
    await box.record_failure("2001:db8:1:2::1")
    assert await box.record_failure("2001:db8:1:2:ffff::9")
    assert await box.is_blocked("2001:db8:1:2::abcd")
    assert not await box.is_blocked("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("not-an-ip") == "not-an-ip"


async def test_state_lives_in_the_store_so_a_second_box_on_it_sees_it(store: MemoryStore) -> None:
    """What a reload (or a second instance on a shared store) relies on: the box itself keeps nothing."""
    first = PenaltyBox(store, 2, window=60, penalty=600)
    await first.record_failure("192.0.2.1")
    second = PenaltyBox(store, 2, window=60, penalty=600)
    assert await second.record_failure("192.0.2.1"), "the failure counted by the first box counts"
    assert await first.is_blocked("192.0.2.1")
    assert not await second.record_failure("192.0.2.1"), "boxed once, whichever box sees it"
    assert {k.split(":")[1] for k in store._data} == {"blocked"}, "the failure counter went with the boxing"


async def test_zero_penalty_closes_the_connection_but_blocks_nobody(store: MemoryStore) -> None:
    box = PenaltyBox(store, 1, window=60, penalty=0)
    assert await box.record_failure("192.0.2.1")
    assert not await box.is_blocked("192.0.2.1")


def test_bad_arguments_and_factory(store: MemoryStore) -> None:
    with pytest.raises(ValueError):
        PenaltyBox(store, 0, 60, 600)
    box = make_penalty_box(Auth(max_failures=7, failure_window=30, penalty_seconds=120), store)
    assert (box.max_failures, box.window, box.penalty, box.store) == (7, 30, 120, store)
