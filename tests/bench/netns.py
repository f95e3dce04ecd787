"""Re-running a benchmark script inside a loopback-only network namespace (``unshare --net``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["NETNS_ENV", "enter_netns"]

NETNS_ENV = "SPAMGATE_BENCH_NETNS"


def enter_netns(script: str, argv: list[str]) -> None:
    """Re-exec ``script`` with ``argv`` in a fresh network namespace with only `lo` (needs root).

    Returns only inside the namespace (with `lo` up): nothing the script starts can leave 127.0.0.1.
    """
    if os.environ.get(NETNS_ENV) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        # A new namespace has its own net.unix.max_dgram_qlen, 10 (the host's is 512 under systemd, and
        # tests/run.sh sets it): Postfix's daemons log through postlogd's datagram socket, and with a
        # queue of 10 a loaded Postfix wedges, every daemon blocked sending a log line.
        try:
            Path("/proc/sys/net/unix/max_dgram_qlen").write_text("512\n")
        except OSError as exc:
            print(f"warning: net.unix.max_dgram_qlen not raised in the namespace ({exc}): Postfix may stall",
                  file=sys.stderr)
        return
    if os.geteuid() != 0:
        raise SystemExit(f"{Path(script).name} needs root: it runs inside `unshare --net`")
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    env = {**os.environ, NETNS_ENV: "1"}
    os.execve(unshare, [unshare, "--net", "--", sys.executable, str(Path(script).resolve()), *argv], env)
