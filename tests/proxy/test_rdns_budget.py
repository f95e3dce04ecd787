"""The reverse lookup's budget: a resolver that never answers costs the greeting ``budget`` seconds, no more."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from spamgate.proxy.rdns import ClientNames, ReverseResolver, _ptr_name


class Silent:
    """A resolver whose queries never come back (a dead nameserver behind a long timeout)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def query(self, name: str, rdtype: str) -> Any:
        self.asked.append((name, rdtype))
        await asyncio.sleep(3600)


async def test_a_silent_resolver_is_cut_off_at_the_budget_and_the_session_task_goes_on() -> None:
    silent = Silent()
    rdns = ReverseResolver(silent, budget=0.2)  # type: ignore[arg-type]
    start = time.monotonic()
    names = await rdns.lookup_bounded("192.0.2.7")
    took = time.monotonic() - start
    assert names == ClientNames(temporary_failure=True)
    assert 0.15 < took < 2.0, took
    assert silent.asked == [("7.2.0.192.in-addr.arpa.", "PTR")]
    # The budget ran in this task: it must not be left cancelled for the rest of the session.
    await asyncio.sleep(0.01)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


def test_ptr_names() -> None:
    assert _ptr_name("192.0.2.7") == "7.2.0.192.in-addr.arpa."
    assert _ptr_name("2001:db8::1") == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
