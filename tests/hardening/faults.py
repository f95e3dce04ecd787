"""Running a load while faults are injected on a schedule, and settling the books afterwards."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from tests.hardening.support import Ledger, run_load_in_thread

Schedule = Sequence[tuple[float, Callable[[], None]]]


def load_with_faults(port: int, *, clients: int, seconds: float, schedule: Schedule = (),
                     pause: float = 0.0, sources: Sequence[str] = ("127.0.0.1",)) -> Ledger:
    """``clients`` senders for ``seconds``; each (time, action) of ``schedule`` runs at its time."""
    ledger = Ledger()
    stop = threading.Event()
    start = time.monotonic()
    thread = run_load_in_thread(port, ledger, clients=clients, stop=stop, pause=pause, sources=sources)
    try:
        for when, action in sorted(schedule, key=lambda s: s[0]):
            time.sleep(max(0.0, start + when - time.monotonic()))
            action()
        time.sleep(max(0.0, start + seconds - time.monotonic()))
    finally:
        stop.set()
        thread.join(180)
    assert not thread.is_alive(), "load did not stop"
    return ledger


def settle(ledger: Ledger, delivered: Callable[[], Counter[str]], timeout: float = 60.0) -> Counter[str]:
    """Wait until every accepted message has arrived (a queue may still be flushing), then a little
    longer so a late duplicate would show too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = delivered()
        if all(got[mid] for mid in ledger.accepted):
            break
        time.sleep(0.2)
    time.sleep(1.0)
    return delivered()


def assert_exactly_once(ledger: Ledger, got: Counter[str], *, min_accepted: int = 1) -> None:
    problems = ledger.check(got)
    assert not problems, f"{ledger.summary()}\n" + "\n".join(problems[:20])
    assert len(ledger.accepted) >= min_accepted, ledger.summary()
    # A refusal caused by a fault is temporary: 4xx, never 5xx (the sender must retry).
    bad = {mid: why for mid, why in ledger.refused.items() if not why.startswith("4") and why != "connection failed"}
    assert not bad, f"permanent refusals: {list(bad.values())[:5]}"
