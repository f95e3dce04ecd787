#!/usr/bin/env python3
"""The DNS cache's in-process path, and its StateStore second level (run on demand, not in CI).

    python tests/bench/bench_dns_cache.py [--rounds 200000]

Prints microseconds per ``CachingResolver.query`` for:

  l1 hit            an answer in the in-process LRU (the only path with [state] backend = "memory")
  l1 hit, l2 set    the same with a store attached as second level (a shared backend): unchanged
  l2 hit            L1 empty, the answer read back from the store (a MemoryStore here: the
                    decoding cost without a network round trip)

Run it with an older checkout's python too (the store rows are skipped where the store is
unknown) to compare the first row before and after. No network: answers are pre-filled.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time

from spamgate.filters.sdk.api import DnsSettings
from spamgate.filters.services.dns import CachingResolver, DnsAnswer


async def per_query(resolver: CachingResolver, names: list[str], rounds: int, repeats: int = 5) -> float:
    """The best of ``repeats`` (the machine is shared and noisy: the minimum is the code's cost)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(rounds // repeats):
            await resolver.query(names[i % len(names)], "A")
        best = min(best, (time.perf_counter() - t0) / (rounds // repeats) * 1e6)
    return best


async def main(rounds: int) -> None:
    names = [f"{i}.2.0.192.zen.example" for i in range(1000)]
    answer = DnsAnswer("ok", ("127.0.0.2",), ttl=3600)
    plain = CachingResolver(DnsSettings(("127.0.0.1",), 9))
    for n in names:
        plain.cache.put((n, "A"), answer)
    rows = [("l1 hit", await per_query(plain, names, rounds))]
    if "store" in inspect.signature(CachingResolver).parameters:
        from spamgate.filters.sdk.state import MemoryStore

        layered = CachingResolver(DnsSettings(("127.0.0.1",), 9), store=MemoryStore())
        for n in names:
            layered.cache.put((n, "A"), answer)
            await layered._save((n, "A"), answer)
        rows.append(("l1 hit, l2 set", await per_query(layered, names, rounds)))
        l2 = rounds // 20
        t = 0.0
        for i in range(l2):
            layered.cache.clear()
            t0 = time.perf_counter()
            await layered.query(names[i % len(names)], "A")
            t += time.perf_counter() - t0
        rows.append(("l2 hit", t / l2 * 1e6))
    for label, us in rows:
        print(f"{label:16} {us:8.2f} us/query")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200_000)
    asyncio.run(main(ap.parse_args().rounds))
