from __future__ import annotations

import pytest

from spamgate.proxy.auth import PenaltyBox, make_penalty_box
from spamgate.proxy.auth.penalty import client_key
from spamgate.proxy.config import Auth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_boxed_after_max_failures_in_window(clock: Clock) -> None:
    box = PenaltyBox(3, window=60, penalty=600, clock=clock)
    assert not box.record_failure("192.0.2.1")
    assert not box.record_failure("192.0.2.1")
    assert not box.is_blocked("192.0.2.1")
    assert box.record_failure("192.0.2.1")
    assert box.is_blocked("192.0.2.1")
    assert not box.is_blocked("192.0.2.2")
    assert not box.record_failure("192.0.2.1"), "already boxed: not a new boxing"
    clock.now += 599
    assert box.is_blocked("192.0.2.1")
    clock.now += 2
    assert not box.is_blocked("192.0.2.1")
    assert not box.record_failure("192.0.2.1"), "the count starts afresh after the penalty"


def test_failures_outside_the_window_are_forgotten(clock: Clock) -> None:
    box = PenaltyBox(3, window=60, penalty=600, clock=clock)
    box.record_failure("192.0.2.1")
    box.record_failure("192.0.2.1")
    clock.now += 61
    assert not box.record_failure("192.0.2.1")
    assert not box.record_failure("192.0.2.1")
    assert box.record_failure("192.0.2.1")


def test_success_resets_the_count_but_not_a_running_penalty(clock: Clock) -> None:
    box = PenaltyBox(2, window=60, penalty=600, clock=clock)
    box.record_failure("192.0.2.1")
    box.record_success("192.0.2.1")
    assert not box.record_failure("192.0.2.1")
    assert box.record_failure("192.0.2.1")
    box.record_success("192.0.2.1")
    assert box.is_blocked("192.0.2.1")


def test_ipv6_counted_per_64(clock: Clock) -> None:
    box = PenaltyBox(2, window=60, penalty=600, clock=clock)
    box.record_failure("2001:db8:1:2::1")
    assert box.record_failure("2001:db8:1:2:ffff::9")
    assert box.is_blocked("2001:db8:1:2::abcd")
    assert not box.is_blocked("2001:db8:1:3::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("not-an-ip") == "not-an-ip"


def test_memory_is_bounded(clock: Clock) -> None:
    box = PenaltyBox(5, window=60, penalty=600, clock=clock, max_entries=100)
    for i in range(1000):
        box.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(box) == 100
    clock.now += 61
    assert not box.is_blocked("10.0.3.231")
    assert len(box) == 99, "stale entries are dropped when looked at"


def test_bad_arguments_and_factory() -> None:
    with pytest.raises(ValueError):
        PenaltyBox(0, 60, 600)
    box = make_penalty_box(Auth(max_failures=7, failure_window=30, penalty_seconds=120))
    assert (box.max_failures, box.window, box.penalty) == (7, 30, 120)
