"""Live figures for the status page, from the instance's Prometheus counters.

Grafana keeps history; this page answers "what is happening now". A sampler takes a
snapshot of the relevant counters every ``interval`` seconds and keeps one hour of
them; rates are the difference between now and the oldest snapshot in the window,
so a process younger than the window reports what happened since it started.

With ``[server] workers`` the console runs in worker 0 only, so its own counters would
speak for a fraction of the traffic: it reads every worker's metric files instead, the
same sum ``/metrics`` serves.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

from prometheus_client import Metric

from spamgate.proxy import metrics

__all__ = ["SESSIONS", "RateSampler", "Snapshot", "read_counters", "read_counters_async"]

Snapshot = dict[str, float]
HOUR = 3600.0
SESSIONS = "sessions"  # the Snapshot key of the open client sessions (a gauge, not a counter)
_FAMILIES = {"spamgate_transactions", "spamgate_filter_verdicts", "spamgate_sessions_active"}


def _families() -> Iterable[Metric]:
    if metrics.MULTIPROCESS:
        return [f for f in metrics.exposition_registry().collect() if f.name in _FAMILIES]
    return [*metrics.TRANSACTIONS.collect(), *metrics.FILTER_VERDICTS.collect(), *metrics.SESSIONS_ACTIVE.collect()]


def read_counters() -> Snapshot:
    """Flattened: ``action:<a>`` per transaction action, ``reject:<why>`` per rejection reason,
    and the open sessions under ``SESSIONS``."""
    out: Snapshot = {SESSIONS: 0.0}
    for fam in _families():
        for s in fam.samples:
            if fam.name == "spamgate_sessions_active":
                out[SESSIONS] += s.value
            elif not s.name.endswith("_total"):
                continue
            elif fam.name == "spamgate_transactions":
                out[f"action:{s.labels['action']}"] = s.value
            elif s.labels["decision"] in ("reject", "tempfail"):
                key = f"reject:{s.labels['filter']} at {s.labels['phase']} ({s.labels['decision']})"
                out[key] = out.get(key, 0.0) + s.value
    out["reject:score over the reject threshold"] = out.get("action:reject", 0.0)
    return out


async def read_counters_async() -> Snapshot:
    """``read_counters`` off the event loop when it reads the workers' files."""
    if metrics.MULTIPROCESS:
        return await asyncio.to_thread(read_counters)
    return read_counters()


class RateSampler:
    def __init__(self, first: Snapshot, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._snaps: deque[tuple[float, Snapshot]] = deque()
        self.sample(first)

    def sample(self, snap: Snapshot) -> None:
        now = self._clock()
        self._snaps.append((now, snap))
        while len(self._snaps) > 2 and self._snaps[1][0] <= now - HOUR:
            self._snaps.popleft()

    def _base(self, window: float) -> tuple[float, Snapshot]:
        now = self._clock()
        base_t, base = self._snaps[0]
        for t, snap in self._snaps:
            if t <= now - window:
                base_t, base = t, snap
        return now - base_t, base

    def per_minute(self, current: Snapshot) -> dict[str, float]:
        """Messages per minute by final action, over the last minute (or since start)."""
        elapsed, base = self._base(60.0)
        minutes = max(elapsed, 1.0) / 60.0
        return {k.split(":", 1)[1]: (v - base.get(k, 0.0)) / minutes
                for k, v in sorted(current.items()) if k.startswith("action:") and v - base.get(k, 0.0) > 0}

    def top_rejections(self, current: Snapshot, n: int = 10) -> list[tuple[str, int]]:
        """The most frequent rejection reasons over the last hour (or since start)."""
        _, base = self._base(HOUR)
        counts = [(k.split(":", 1)[1], int(v - base.get(k, 0.0))) for k, v in current.items()
                  if k.startswith("reject:") and v - base.get(k, 0.0) > 0]
        return sorted(counts, key=lambda kv: (-kv[1], kv[0]))[:n]
