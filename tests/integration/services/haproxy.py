"""A real HAProxy in TCP mode: one frontend per spamgate instance, send-proxy-v2, health checks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.integration.services.postfix import free_port, wait_port
from tests.integration.services.process import stop_process

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


class HAProxy:
    """``frontends[name]`` is the loopback port that reaches backend server ``name`` (no balancing
    between them, so a test chooses the instance); every server gets PROXY v2 and a health check
    that sends PROXY LOCAL, every 300 ms."""

    def __init__(self, workdir: Path, servers: dict[str, int]) -> None:
        self.dir = workdir
        self.frontends = {name: free_port() for name in servers}
        parts = ["defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n"]
        for name, port in servers.items():
            parts.append(f"frontend f_{name}\n  bind 127.0.0.1:{self.frontends[name]}\n  default_backend b_{name}\n")
            parts.append(f"backend b_{name}\n  server {name} 127.0.0.1:{port} send-proxy-v2 check "
                         "check-send-proxy inter 300ms\n")
        self.config = workdir / "haproxy.cfg"
        self.config.write_text("".join(parts))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.dir / "haproxy.log", "wb") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT)
        for port in self.frontends.values():
            wait_port(port, 10)

    def log(self) -> str:
        return (self.dir / "haproxy.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
