"""A private, real clamd (Debian ``clamav-daemon``) on a loopback TCP port, for the suite.

No official signatures can be downloaded here (never run freshclam), so the suite writes
its own database: an ``.hdb`` (MD5 hash) line for the EICAR test file and one for a zip
holding it. clamd also unpacks zips itself, so the EICAR line alone already matches inside
a zip; the second line keeps the test independent of that. Started in the foreground,
stopped by PID; ``stop()``/``start()`` in between to simulate an outage.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.filters.attachment_samples import EICAR, zip_of
from tests.integration.services.postfix import free_port
from tests.integration.services.process import stop_process

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
SIGNATURE = "Eicar-Test-Signature"
EICAR_ZIP = zip_of({"eicar.com": EICAR})
STREAM_MAX = 2 * 1024 * 1024  # StreamMaxLength: small, so the oversize test stays cheap

CONF = """\
DatabaseDirectory {db}
TCPSocket {port}
TCPAddr 127.0.0.1
Foreground yes
User root
LogFile {log}
LogTime yes
StreamMaxLength {stream_max}
MaxThreads 4
PidFile {pid}
"""


def hdb_line(data: bytes, name: str) -> str:
    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"  # ClamAV's .hdb format is MD5


class Clamd:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "db"
        db.mkdir(exist_ok=True)
        (db / "local.hdb").write_text(hdb_line(EICAR, SIGNATURE) + hdb_line(EICAR_ZIP, SIGNATURE + ".Zip"))
        self.port = free_port()
        self.log_path = workdir / "clamd.log"
        self.conf = workdir / "clamd.conf"
        self.conf.write_text(CONF.format(db=db, port=self.port, log=self.log_path, stream_max=STREAM_MAX,
                                         pid=workdir / "clamd.pid"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        out = (self.dir / "clamd.out").open("ab")
        self.proc = subprocess.Popen([CLAMD, "--foreground", "-c", str(self.conf)], stdout=out,
                                     stderr=subprocess.STDOUT, cwd=self.dir)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited {self.proc.returncode}:\n{self.output()}")
            if self.ping():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"clamd not answering PING after {timeout}s:\n{self.output()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc, 20)
        self.proc = None

    def output(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.dir / "clamd.out", self.log_path) if p.exists()]
        return "\n".join(parts)


def start_clamd(workdir: Path) -> Clamd:
    c = Clamd(workdir)
    c.start()
    return c
