"""A private, real Prometheus (Debian ``prometheus``) on a loopback port, for the suite.

Started in the foreground with its own config and TSDB directory, stopped by PID.
``backfill()`` loads OpenMetrics text with explicit timestamps through
``promtool tsdb create-blocks-from openmetrics`` before start, for tests that need
exact, known series instead of live scrapes.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.services.process import stop_process

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    def __init__(self, workdir: Path, *, targets: list[str] | None = None, scrape_interval: str = "1s",
                 rule_files: list[str] | None = None) -> None:  # fmt: skip
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "tsdb"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "prometheus.yml"
        job = {"job_name": "spamgate", "static_configs": [{"targets": targets or []}]}
        cfg = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": rule_files or [],
            "scrape_configs": [job],
        }
        self.config.write_text(json.dumps(cfg))  # JSON is YAML
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def backfill(self, openmetrics: str) -> None:
        src = self.workdir / "backfill.om"
        src.write_text(openmetrics)
        subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(src), str(self.data)],
                       check=True, capture_output=True)  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.data}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=100y",
             "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def query(self, expr: str, **params: str) -> Any:
        """The ``data`` of an instant query; raises with Prometheus' error text on failure."""
        answer = self.api("query", query=expr, **params)
        if answer.get("status") != "success":
            raise AssertionError(f"{expr!r}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def wait_for(self, expr: str, timeout: float = 30.0) -> Any:
        """Poll until ``expr`` returns a non-empty result; return that result."""
        deadline = time.monotonic() + timeout
        while True:
            data = self.query(expr)
            if data["result"]:
                return data["result"]
            if time.monotonic() > deadline:
                raise AssertionError(f"no data for {expr!r} after {timeout}s")
            time.sleep(0.5)

    def stop(self) -> None:
        stop_process(self.proc, 20)
        self.proc = None
