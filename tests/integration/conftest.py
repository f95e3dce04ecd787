"""Fixtures that start real components: a private Postfix and real spamgate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.services.postfix import Postfix, free_port, running_postfix, wait_port

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def postfix() -> Iterator[Postfix]:
    with running_postfix() as pf:
        yield pf


class Spamgate:
    """A real ``spamgate run --config FILE`` subprocess."""

    def __init__(self, workdir: Path, config: str, port: int, port2: int, metrics_port: int) -> None:
        self.dir = workdir
        self.port = port
        self.port2 = port2
        self.metrics_port = metrics_port
        self.config_path = workdir / "spamgate.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "spamgate.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spamgate.proxy", "run", "--config", str(self.config_path)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spamgate exited with {self.proc.returncode}:\n{self.log()}")
            if "spamgate ready" in self.log():
                wait_port(self.port, 5)
                return
            time.sleep(0.05)
        raise TimeoutError(f"spamgate did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is not None:
                return self.proc.returncode
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(5)
        finally:
            if not self._log.closed:
                self._log.close()


SpamgateFactory = Callable[..., Spamgate]


@pytest.fixture
def spamgate(postfix: Postfix, tmp_path: Path) -> Iterator[SpamgateFactory]:
    started: list[Spamgate] = []

    def factory(extra_toml: str = "", *, auth_toml: str | None = None, listen_toml: str | None = None,
                backend_toml: str | None = None, server_toml: str = "", start: bool = True) -> Spamgate:
        work = tmp_path / f"sg{len(started)}"
        work.mkdir()
        port, port2, mport = free_port(), free_port(), free_port()
        listen = listen_toml if listen_toml is not None else (
            '[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
        )
        listen = listen.replace("@PORT@", str(port)).replace("@PORT2@", str(port2))
        backend = backend_toml if backend_toml is not None else (
            f'host = "127.0.0.1"\nport = {postfix.port}\ntimeout = 30\n'
        )
        auth = auth_toml if auth_toml is not None else 'local_domains = ["example.edu"]\n'
        if "[dns]" not in extra_toml:
            # No resolver on 127.0.0.1:53 here: reverse lookups would only wait for their timeout.
            extra_toml = "[dns]\nreverse_lookup = false\n" + extra_toml
        config = (
            f'[server]\nhostname = "spamgate.test"\nstate_dir = "{work}/state"\nshutdown_grace = 5\n'
            f"{server_toml}\n{listen}\n[backend]\n{backend}\n"
            f'[metrics]\nhost = "127.0.0.1"\nport = {mport}\n\n[auth]\n{auth}\n{extra_toml}\n'
        )
        sg = Spamgate(work, config, port, port2, mport)
        started.append(sg)
        if start:
            sg.start()
        return sg

    yield factory
    for sg in started:
        sg.stop()
