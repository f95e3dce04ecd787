"""Starting the things the benchmark measures, each on a loopback port, each stopped by PID.

Adapted from ../shared/bench-peers/ (bench_*.sh): smtp-sink, the naive forwarder, Haraka,
spampd; Postfix, spamd and NSD come from the integration suite's own service helpers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HARAKA_HOME", "HARAKA_VERSION", "Daemons", "Started", "free_port", "haraka_bin", "install_haraka",
    "wait_port",
]

HERE = Path(__file__).resolve().parent
SMTP_SINK = "/usr/sbin/smtp-sink"
HARAKA_VERSION = "3.3.4"
HARAKA_HOME = Path(os.environ.get("SPAMGATE_BENCH_HARAKA", "/tmp/spamgate-bench-haraka"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def haraka_bin() -> Path:
    return HARAKA_HOME / "node_modules" / ".bin" / "haraka"


def install_haraka() -> str | None:
    """npm install Haraka into a scratch dir (before entering the network namespace); None or why not."""
    if haraka_bin().exists():
        return None
    if not shutil.which("npm"):
        return "npm not installed (apt-get install nodejs npm)"
    HARAKA_HOME.mkdir(parents=True, exist_ok=True)
    if not (HARAKA_HOME / "package.json").exists():
        subprocess.run(["npm", "init", "-y"], cwd=HARAKA_HOME, capture_output=True, check=False)
    res = subprocess.run(["npm", "install", "--no-audit", "--no-fund", f"Haraka@{HARAKA_VERSION}"],
                         cwd=HARAKA_HOME, capture_output=True, text=True, check=False)  # fmt: skip
    return None if haraka_bin().exists() else f"npm install Haraka failed: {res.stderr[-300:]}"


@dataclass
class Started:
    label: str
    port: int
    pid: int  # the process whose tree's CPU and memory is measured


class Daemons:
    """Everything started here, stopped in reverse order by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, cmd: list[str], port: int | None, *, cwd: Path | None = None,
              env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.Popen[bytes]:  # fmt: skip
        log = (self.work / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
        log.close()
        self.procs.append(proc)
        if port is not None:
            try:
                wait_port(port, timeout, proc)
            except (RuntimeError, TimeoutError) as exc:
                tail = (self.work / f"{name}.log").read_text(errors="replace")[-800:]
                raise RuntimeError(f"{name}: {exc}\n{tail}") from None
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        # forked workers (spampd, Haraka's cluster) live in the session we gave the daemon
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    # -- the peers -------------------------------------------------------------------------

    def sink(self, port: int | None = None) -> Started:
        port = port or free_port()
        proc = self.spawn(f"sink-{port}", [SMTP_SINK, "-u", "nobody", "-c", f"127.0.0.1:{port}", "1024"], port)
        return Started("smtp-sink", port, proc.pid)

    def sink_count(self, sink: Started) -> int:
        """Messages smtp-sink -c has counted so far (its counter line, rewritten with CR)."""
        text = (self.work / f"sink-{sink.port}.log").read_text(errors="replace").replace("\r", "\n")
        counts = [int(part.split("=")[1]) for part in text.split() if part.startswith("mesg=")]
        return counts[-1] if counts else 0

    def naive(self, backend: int) -> Started:
        port = free_port()
        proc = self.spawn("naive", [sys.executable, str(HERE / "naive_forwarder.py"), str(port), str(backend)], port)
        return Started("naive forwarder", port, proc.pid)

    def floor(self, kind: str) -> Started:
        """floor_server.py: aiosmtpd, asyncio streams or a bare asyncio Protocol, answering 250, relaying nothing."""
        port = free_port()
        proc = self.spawn(f"floor-{kind}", [sys.executable, str(HERE / "floor_server.py"), str(port), kind], port)
        return Started(f"{kind} floor", port, proc.pid)

    def haraka(self, backend: int) -> Started:
        home = self.work / "haraka"
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run([str(haraka_bin()), "-i", str(home)], capture_output=True, check=True)
        cfg = home / "config"
        port = free_port()
        (cfg / "plugins").write_text("rcpt_to.in_host_list\nqueue/smtp_forward\n")
        (cfg / "host_list").write_text("bench.test\nexample.edu\n")
        (cfg / "me").write_text("haraka.bench.test\n")
        (cfg / "smtp_forward.ini").write_text(f"host=127.0.0.1\nport={backend}\n")
        (cfg / "log.ini").write_text("[main]\nlevel=warn\ntimestamps=false\nformat=default\n")
        (cfg / "smtp.ini").write_text(f"[main]\nlisten=127.0.0.1:{port}\n")
        proc = self.spawn("haraka", [str(haraka_bin()), "-c", str(home)], port)
        return Started(f"Haraka {HARAKA_VERSION}", port, proc.pid)

    def spampd(self, backend: int, children: int) -> Started:
        port = free_port()
        # --logsock=inet: no /dev/log here; no --homedir: SA 4.0.1 treats it as tainted and dies
        cmd = ["spampd", f"--host=127.0.0.1:{port}", f"--relayhost=127.0.0.1:{backend}", f"--children={children}",
               "--user=spampd", "--group=spampd", f"--pid={self.work}/spampd.pid", "--local-only", "--tagall",
               "--logsock=inet", "--nodetach"]  # fmt: skip
        proc = self.spawn("spampd", cmd, port, timeout=90)
        return Started("spampd", port, proc.pid)

    def spamgate(self, name: str, config: str) -> Started:
        cfg = self.work / f"{name}.toml"
        cfg.write_text(config)
        port = int(config.split("[[listen]]", 1)[1].split("port = ", 1)[1].split("\n", 1)[0])
        exe = Path(sys.executable).with_name("spamgate")
        cmd = ([str(exe), "run", "--config", str(cfg)] if exe.exists()
               else [sys.executable, "-m", "spamgate.proxy", "run", "--config", str(cfg)])
        proc = self.spawn(name, cmd, port)
        return Started(name, port, proc.pid)
