"""What a process (tree) costs, read from /proc: CPU ticks and resident memory; and how busy the machine was.

Daemons that fork workers (Postfix's master, spampd, spamd, Haraka's cluster, a
``[server] workers = N`` spamgate) are measured as the root process plus its live direct children
plus the CPU of the children it has already reaped (``cutime``/``cstime``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["HZ", "busy_share", "children", "cpu_seconds", "machine_ticks", "peak_rss_kb", "rss_kb"]

HZ = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out: list[int] = []
    task = Path(f"/proc/{pid}/task")
    try:
        for tid in task.iterdir():
            out += [int(p) for p in (tid / "children").read_text().split()]
    except OSError:
        pass
    return out


def _stat_ticks(pid: int, with_reaped: bool) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # after the ")" field 0 is the state: utime=11, stime=12, cutime=13, cstime=14
    return sum(int(x) for x in fields[11 : 15 if with_reaped else 13])


def cpu_seconds(pid: int) -> float:
    """user+sys of ``pid``, of its live children (and theirs), and of its reaped children."""
    ticks = _stat_ticks(pid, True)
    todo = children(pid)
    while todo:
        child = todo.pop()
        ticks += _stat_ticks(child, True)
        todo += children(child)
    return ticks / HZ


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_kb(pid: int, key: str) -> int:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _status_kb(p, key)
        todo += children(p)
    return total


def rss_kb(pid: int) -> int:
    """Resident memory now, summed over the process and its descendants."""
    return _tree_kb(pid, "VmRSS")


def peak_rss_kb(pid: int) -> int:
    """High-water mark of resident memory (VmHWM), summed over the process and its live descendants."""
    return _tree_kb(pid, "VmHWM")


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine so far, every core: idle and iowait are not busy."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of all cores' time spent busy between two machine_ticks() readings."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1)
