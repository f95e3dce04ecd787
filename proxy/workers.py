"""``[server] workers = N``: a small supervisor running N proxy processes on the same ports.

Each worker is a fresh ``spamgate run`` process, not a fork: prometheus-client picks its
multiprocess value store when it is first imported, so PROMETHEUS_MULTIPROC_DIR must be in
the environment before that. Every worker binds every listener with SO_REUSEPORT and the
kernel spreads new connections over them. The supervisor holds one bound, never-listening
SO_REUSEPORT socket per listener address: it turns port 0 into one concrete port for all
workers, keeps the port while a worker restarts, and fails early when the address is taken.

Worker 0 alone serves HTTP ([metrics] and the console); its /metrics sums every worker's
files in the supervisor's private multiprocess directory. SIGHUP is forwarded (each worker
reloads), SIGTERM/SIGINT are forwarded (each drains) and the supervisor exits once all are
gone. A worker that dies is restarted after a backoff; one that cannot start at all on the
first attempt (a plugin or TLS error, a port in use) stops the supervisor with exit 1. A worker
alive but stuck is worse than a dead one (the kernel keeps giving it connections), so each one
beats on its ready pipe and the watchdog kills one silent for ``worker_watchdog`` seconds.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import multiprocess

from spamgate.proxy.config import Config, Listener

__all__ = ["Seat", "Supervisor", "reserve_ports", "supervise"]

log = logging.getLogger("spamgate.workers")

_PR_SET_PDEATHSIG = 1
_FIRST_DELAY = 0.5  # seconds before restarting a dead worker; doubles while it keeps dying
_MAX_DELAY = 30.0
_STABLE = 60.0  # a worker that ran this long resets the backoff
# How many workers are listening, written by the supervisor beside the metric files, read by worker 0's /readyz.
_CENSUS = "workers.json"


@dataclass
class Seat:
    """What the supervisor tells one worker: its number, the listeners' ports, its ready pipe."""

    number: int
    ports: Mapping[str, int]
    ready_fd: int | None = None

    @property
    def serves_http(self) -> bool:
        return self.number == 0

    @classmethod
    def from_args(cls, number: int, ports: str | None, ready_fd: int | None) -> Seat:
        return cls(number, {str(k): int(v) for k, v in json.loads(ports or "{}").items()}, ready_fd)

    @classmethod
    def join(cls, number: int, ports: str | None, ready_fd: int | None) -> Seat:
        """The seat of this process, a worker: it drains and exits when the supervisor dies."""
        # Without the supervisor the worker would linger on the shared port, serving stale config.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        return cls.from_args(number, ports, ready_fd)

    def census(self) -> tuple[int, int] | None:
        """(workers listening, workers configured), as the supervisor last wrote it; None before it has."""
        try:
            text = (Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / _CENSUS).read_text()
            data = json.loads(text)
            return int(data["up"]), int(data["workers"])
        except (KeyError, OSError, ValueError, TypeError):
            return None

    def ready(self, heartbeat: float = 0.0) -> None:
        """Tell the supervisor the listeners are up (it reads EOF instead if the worker dies first).

        With ``heartbeat`` > 0 the pipe stays open and this event loop writes a byte to it every
        ``heartbeat`` seconds: the supervisor's watchdog hears a worker whose loop is stuck fall silent.
        """
        if self.ready_fd is None:
            return
        fd, self.ready_fd = self.ready_fd, None
        os.write(fd, b"ready\n")
        if heartbeat <= 0:
            os.close(fd)
            return
        os.set_blocking(fd, False)  # a supervisor behind on reading must never stall this loop
        loop = asyncio.get_running_loop()

        def beat() -> None:
            try:
                os.write(fd, b".")
            except BlockingIOError:
                pass  # the pipe is full of beats the supervisor has yet to read: it hears us anyway
            except OSError:
                os.close(fd)  # the supervisor is gone (EPIPE): nobody to tell
                return
            loop.call_later(heartbeat, beat)

        loop.call_later(heartbeat, beat)


def _addresses(host: str) -> list[tuple[socket.AddressFamily, str, tuple[int, ...]]]:
    """The addresses asyncio's create_server binds for ``host`` (all of getaddrinfo's, deduplicated)."""
    out: list[tuple[socket.AddressFamily, str, tuple[int, ...]]] = []
    for family, _, _, _, addr in socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM,
                                                    flags=socket.AI_PASSIVE):
        entry = (family, str(addr[0]), tuple(int(x) for x in addr[2:]))
        if entry not in out:
            out.append(entry)
    return out


def reserve_ports(listeners: Sequence[Listener]) -> tuple[dict[str, int], list[socket.socket]]:
    """Bind (never listen) a SO_REUSEPORT socket per listener address: the ports every worker uses."""
    ports: dict[str, int] = {}
    held: list[socket.socket] = []
    try:
        for lst in listeners:
            port = lst.port
            for family, host, rest in _addresses(lst.host):
                sock = socket.socket(family, socket.SOCK_STREAM)
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
                sock.bind((host, port, *rest))
                port = sock.getsockname()[1]
            ports[lst.label] = port
    except OSError:
        for sock in held:
            sock.close()
        raise
    return ports, held


def _how(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"


class _Pulse:
    """The supervisor's end of a worker's pipe: "ready" once its listeners are up, then its heartbeats."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._loop = asyncio.get_running_loop()
        self.up: asyncio.Future[bool] = self._loop.create_future()
        self.last = self._loop.time()
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except OSError:
            data = b""
        self.last = self._loop.time()
        if not self.up.done():
            self.up.set_result(data.startswith(b"ready"))
        if not data:  # EOF: the worker exited, or beats nothing (worker_watchdog = 0)
            self.close()

    @property
    def alive(self) -> bool:
        """The worker said "ready" (its listeners are up) before anything else."""
        return self.up.done() and self.up.result()

    def silent(self) -> float:
        """Seconds since the worker last wrote; 0 once its pipe is closed (proc.wait() takes over)."""
        return self._loop.time() - self.last if self._fd is not None else 0.0

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._loop.remove_reader(fd)
            os.close(fd)
        if not self.up.done():
            self.up.set_result(False)


class Supervisor:
    def __init__(self, cfg: Config, config_path: str, log_level: str | None = None) -> None:
        self.count = cfg.server.workers
        self.watchdog = cfg.server.worker_watchdog
        self.listeners = cfg.listen
        self.config_path = config_path
        self.log_level = log_level
        self.ports: dict[str, int] = {}
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.ready: set[int] = set()  # pids listening, with their signal handlers in place
        self.hup_pending: set[int] = set()  # pids that were starting when a SIGHUP came
        self.metrics_dir = ""
        self.stopping = asyncio.Event()

    def _publish(self) -> None:
        """The census for worker 0's /readyz: written whole (a rename), on every change.

        A synchronous write of a few bytes to the private tmp dir: this loop serves no client.
        """
        if not self.metrics_dir:
            return
        tmp = Path(self.metrics_dir) / f".{_CENSUS}"
        tmp.write_text(json.dumps({"up": len(self.ready), "workers": self.count}))
        tmp.replace(tmp.with_name(_CENSUS))

    def _command(self, number: int, ready_fd: int) -> list[str]:
        cmd = [sys.executable, "-m", "spamgate.proxy", "run", "--config", self.config_path,
               "--worker", str(number), "--worker-ports", json.dumps(self.ports), "--ready-fd", str(ready_fd)]
        return cmd + (["--log-level", self.log_level] if self.log_level else [])

    async def _spawn(self, number: int) -> _Pulse:
        """Start worker ``number``; its pulse says whether it came up (False: it exited before)."""
        r, w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(number, w), pass_fds=(w,),
                env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir},
            )
        finally:
            os.close(w)
        self.procs[number] = proc
        if self.stopping.is_set():
            proc.terminate()
        pulse = _Pulse(r)
        if not await pulse.up:
            pulse.close()
            return pulse
        self.ready.add(proc.pid)
        self._publish()
        if proc.pid in self.hup_pending:
            self.hup_pending.discard(proc.pid)
            proc.send_signal(signal.SIGHUP)  # it may have read the file before the change
        return pulse

    async def _watchdog(self, number: int, proc: asyncio.subprocess.Process, pulse: _Pulse) -> None:
        """Kill a worker that sends no heartbeat for ``worker_watchdog`` seconds (_keep restarts it)."""
        while proc.returncode is None:
            await asyncio.sleep(min(1.0, self.watchdog / 4))
            silent = pulse.silent()
            if silent > self.watchdog and proc.returncode is None:
                log.error("worker %d (pid %d) sent no heartbeat for %.1fs (server.worker_watchdog = %g): its "
                          "event loop is blocked or the process is stopped; killing it", number, proc.pid, silent,
                          self.watchdog)
                proc.kill()
                return

    async def _keep(self, number: int, first: asyncio.Future[bool]) -> None:
        """Run worker ``number`` until the supervisor stops, restarting it when it dies."""
        loop = asyncio.get_running_loop()
        delay = _FIRST_DELAY
        while True:
            began = loop.time()
            pulse = await self._spawn(number)
            if not first.done():
                first.set_result(pulse.alive)
            proc = self.procs[number]
            watch = None
            if pulse.alive and self.watchdog > 0:
                watch = asyncio.create_task(self._watchdog(number, proc, pulse))
            try:
                code = await proc.wait()
            finally:
                pulse.close()
                if watch is not None:
                    watch.cancel()
            self.ready.discard(proc.pid)
            self._publish()
            self.hup_pending.discard(proc.pid)
            multiprocess.mark_process_dead(proc.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            if self.stopping.is_set() or not first.result():
                return
            if loop.time() - began > _STABLE:
                delay = _FIRST_DELAY
            log.warning("worker %d (pid %d) exited with %s; restarting it in %.1fs", number, proc.pid, _how(code),
                        delay)
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
                return
            except TimeoutError:
                delay = min(delay * 2, _MAX_DELAY)

    def _forward(self, sig: signal.Signals) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping.set()
        live = [p for p in self.procs.values() if p.returncode is None]
        later = ""
        if sig == signal.SIGHUP:
            # A worker still starting would die of it (default action): it gets it once listening.
            starting = {p.pid for p in live if p.pid not in self.ready}
            self.hup_pending |= starting
            live = [p for p in live if p.pid not in starting]
            later = f", {len(starting)} more once listening" if starting else ""
        log.info("%s: forwarded to %d worker(s)%s", sig.name, len(live), later)
        for proc in live:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    async def run(self) -> int:
        try:
            self.ports, held = reserve_ports(self.listeners)
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        self.metrics_dir = tempfile.mkdtemp(prefix="spamgate-metrics-")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._forward, sig)
        try:
            firsts = [loop.create_future() for _ in range(self.count)]
            tasks = [asyncio.create_task(self._keep(n, firsts[n])) for n in range(self.count)]
            started = all(await asyncio.gather(*firsts))
            failed = not started and not self.stopping.is_set()
            if started:
                log.info("workers ready count=%d pids=%s ports=%s", self.count,
                         ",".join(str(self.procs[n].pid) for n in range(self.count)),
                         ",".join(f"{k}:{v}" for k, v in self.ports.items()))
            elif failed:
                log.error("a worker could not start (its error is above): stopping the others")
                self._forward(signal.SIGTERM)
            await asyncio.gather(*tasks)
            log.info("all workers stopped")
            return 1 if failed else 0
        finally:
            for sock in held:
                sock.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def supervise(cfg: Config, config_path: str, log_level: str | None = None) -> int:
    """``spamgate run`` with ``[server] workers`` > 1: returns the exit code."""
    return asyncio.run(Supervisor(cfg, config_path, log_level).run())
