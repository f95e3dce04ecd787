"""Acceptance: spamgate started the way a new user starts it, from a minimal config.

Each config here is what the README shows: ``[[listen]]`` and ``[backend]``, plus the one key
the feature needs. The backend is a real Postfix. For DNS the config names a nameserver
address where nothing listens (what a box without a local resolver has), so nothing leaves
loopback; tests/acceptance/test_dns_default.py also runs spamgate with ``[dns]`` left out
entirely, inside a loopback-only network namespace.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.services.postfix import Postfix, free_port, running_postfix, wait_port

SPAMGATE = str(Path(sys.executable).with_name("spamgate"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def dead_udp_port() -> int:
    """A loopback UDP port nobody listens on: a DNS query there is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postfix() -> Iterator[Postfix]:
    with running_postfix() as pf:
        yield pf


class Proc:
    """``spamgate run --config FILE``, as a user runs it (the installed console script)."""

    def __init__(self, workdir: Path, config: str) -> None:
        self.dir = workdir
        self.config_path = workdir / "spamgate.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "spamgate.log"
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen([SPAMGATE, "run", "--config", str(self.config_path)], stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=workdir)

    def wait_ready(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spamgate exited with {self.proc.returncode}:\n{self.log()}")
            if "spamgate ready" in self.log():
                wait_port(port, 5)
                return
            time.sleep(0.05)
        raise TimeoutError(f"spamgate did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def hup_and_wait(self, timeout: float = 15.0) -> None:
        before = self.log().count("reloaded config=")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log().count("reloaded config=") == before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reload:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            self._log.close()


class Minimal:
    def __init__(self, proc: Proc, port: int, port2: int) -> None:
        self.proc = proc
        self.port = port
        self.port2 = port2


MinimalFactory = Callable[..., Minimal]


@pytest.fixture
def minimal(postfix: Postfix, tmp_path: Path) -> Iterator[MinimalFactory]:
    """Start spamgate from ``[[listen]]`` + ``[backend]`` + what the test adds, nothing else.

    ``@PORT@``/``@PORT2@`` in ``extra`` are free ports for extra listeners.
    """
    started: list[Proc] = []

    def factory(extra: str = "", *, dns: bool = True) -> Minimal:
        port, port2 = free_port(), free_port()
        config = (
            f'[[listen]]\nhost = "127.0.0.1"\nport = {port}\n\n'
            f'[backend]\nhost = "127.0.0.1"\nport = {postfix.port}\n\n'
        )
        if dns:
            config += f'[dns]\nnameservers = ["127.0.0.1"]\nport = {dead_udp_port()}\n\n'
        config += extra.replace("@PORT@", str(port)).replace("@PORT2@", str(port2))
        work = tmp_path / f"sg{len(started)}"
        work.mkdir()
        proc = Proc(work, config)
        started.append(proc)
        proc.wait_ready(port)
        return Minimal(proc, port, port2)

    yield factory
    for p in started:
        p.stop()


def metrics_text(port: int = 9787) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


__all__ = ["Minimal", "MinimalFactory", "Proc", "dead_udp_port", "metrics_text", "os"]
