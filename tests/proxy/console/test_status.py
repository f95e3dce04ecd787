"""The status page's figures: counters read from one process or summed over the workers' files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from spamgate.filters.sdk.testing import FakeClock
from spamgate.proxy import metrics
from spamgate.proxy.console.status import SESSIONS, RateSampler, read_counters


def test_rates_and_rejections_are_differences_against_the_window() -> None:
    clock = FakeClock()
    sampler = RateSampler({"action:accept": 10.0, "reject:rbl at rcpt (reject)": 4.0, SESSIONS: 3.0}, clock)
    clock.now += 30
    sampler.sample({"action:accept": 40.0, "reject:rbl at rcpt (reject)": 4.0})
    clock.now += 90
    now = {"action:accept": 100.0, "action:reject": 2.0, "reject:rbl at rcpt (reject)": 9.0, SESSIONS: 7.0}
    # the last minute starts at the 30 s snapshot (the newest one at least 60 s old): 60 more in 1.5 min
    assert sampler.per_minute(now) == {"accept": 40.0, "reject": 2.0 / 1.5}
    assert sampler.top_rejections(now) == [("rbl at rcpt (reject)", 5)]


def test_read_counters_sees_this_process_counters() -> None:
    before = read_counters()
    metrics.TRANSACTIONS.labels("accept").inc(3)
    metrics.FILTER_VERDICTS.labels("rbl", "rcpt", "reject").inc(2)
    metrics.FILTER_VERDICTS.labels("rbl", "rcpt", "continue").inc(5)
    metrics.SESSIONS_ACTIVE.labels("mx").inc(4)
    try:
        after = read_counters()
    finally:
        metrics.SESSIONS_ACTIVE.labels("mx").dec(4)
    assert after["action:accept"] - before.get("action:accept", 0) == 3
    assert after["reject:rbl at rcpt (reject)"] - before.get("reject:rbl at rcpt (reject)", 0) == 2
    assert not any("continue" in k for k in after)
    assert after[SESSIONS] - before[SESSIONS] == 4


_WORKER = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from spamgate.proxy import metrics
metrics.TRANSACTIONS.labels("accept").inc(int(sys.argv[2]))
metrics.SESSIONS_ACTIVE.labels("mx").inc(int(sys.argv[2]))
if len(sys.argv) > 3:
    from spamgate.proxy.console.status import read_counters
    snap = read_counters()
    print(snap["action:accept"], snap["sessions"])
"""


def test_with_workers_the_counters_are_every_workers_sum(tmp_path: Path) -> None:
    # Separate processes, each with its own metric files, as the supervisor's workers have
    # (a dead worker's live gauges are removed by the supervisor, not here: both count).
    subprocess.run([sys.executable, "-c", _WORKER, str(tmp_path), "5"], check=True)
    out = subprocess.run([sys.executable, "-c", _WORKER, str(tmp_path), "2", "read"], check=True,
                         capture_output=True, text=True).stdout.split()
    assert [float(v) for v in out] == [7.0, 7.0]
