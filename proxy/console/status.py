"""Live figures for the status page, from the process's own Prometheus counters.

Grafana keeps history; this page answers "what is happening now". A sampler takes a
snapshot of the relevant counters every ``interval`` seconds and keeps one hour of
them; rates are the difference between now and the oldest snapshot in the window,
so a process younger than the window reports what happened since it started.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from spamgate.proxy import metrics

__all__ = ["RateSampler", "Snapshot"]

Snapshot = dict[str, float]
HOUR = 3600.0


def _counter_values() -> Snapshot:
    """Flattened counters: ``action:<a>`` per transaction action, ``reject:<why>`` per rejection reason."""
    out: Snapshot = {}
    for fam in metrics.TRANSACTIONS.collect():
        for s in fam.samples:
            if s.name.endswith("_total"):
                out[f"action:{s.labels['action']}"] = s.value
    out["reject:score over the reject threshold"] = out.get("action:reject", 0.0)
    for fam in metrics.FILTER_VERDICTS.collect():
        for s in fam.samples:
            if s.name.endswith("_total") and s.labels["decision"] in ("reject", "tempfail"):
                key = f"reject:{s.labels['filter']} at {s.labels['phase']} ({s.labels['decision']})"
                out[key] = out.get(key, 0.0) + s.value
    return out


class RateSampler:
    def __init__(self, read: Callable[[], Snapshot] = _counter_values,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._clock = clock
        self._snaps: deque[tuple[float, Snapshot]] = deque()
        self.sample()

    def sample(self) -> None:
        now = self._clock()
        self._snaps.append((now, self._read()))
        while len(self._snaps) > 2 and self._snaps[1][0] <= now - HOUR:
            self._snaps.popleft()

    def _base(self, window: float) -> tuple[float, Snapshot, Snapshot, float]:
        now = self._clock()
        current = self._read()
        base_t, base = self._snaps[0]
        for t, snap in self._snaps:
            if t <= now - window:
                base_t, base = t, snap
        return now - base_t, base, current, now

    def per_minute(self) -> dict[str, float]:
        """Messages per minute by final action, over the last minute (or since start)."""
        elapsed, base, current, _ = self._base(60.0)
        minutes = max(elapsed, 1.0) / 60.0
        return {k.split(":", 1)[1]: (v - base.get(k, 0.0)) / minutes
                for k, v in sorted(current.items()) if k.startswith("action:") and v - base.get(k, 0.0) > 0}

    def top_rejections(self, n: int = 10) -> list[tuple[str, int]]:
        """The most frequent rejection reasons over the last hour (or since start)."""
        _, base, current, _ = self._base(HOUR)
        counts = [(k.split(":", 1)[1], int(v - base.get(k, 0.0))) for k, v in current.items()
                  if k.startswith("reject:") and v - base.get(k, 0.0) > 0]
        return sorted(counts, key=lambda kv: (-kv[1], kv[0]))[:n]
