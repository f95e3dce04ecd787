"""A private, real spamd (Debian ``spamd``) on a loopback port, for the suite.

Started in the foreground with the rules the package ships (no ``sa-update``: there is
no network), ``-L`` (local tests only), ``--allow-tell`` for learning, and its own site
config whose ``bayes_path`` points into its own directory, so learning in one test run
never touches a system Bayes database. Stopped by PID.

As root, spamd insists on dropping privileges (``-u``), so its directory is made under
the system temp dir (pytest's own temp tree is mode 0700 and unreachable for that user)
and removed by :meth:`Spamd.close`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.services.process import stop_process

SPAMD = shutil.which("spamd") or "/usr/sbin/spamd"
SA_LEARN = shutil.which("sa-learn") or "/usr/bin/sa-learn"
SA_EXAMPLES = Path("/usr/share/doc/spamassassin/examples")
SITE_CONFIG = Path("/etc/spamassassin")
# A failed sa-update leaves this directory empty; SpamAssassin then loads it instead of
# the shipped rules and loads no rules at all (GTUBE passes unflagged).
UPDATES_DIR = Path("/var/lib/spamassassin/4.000001")

LOCAL_CF = """
use_bayes 1
bayes_auto_learn 0
bayes_path {bayes}/bayes
bayes_file_mode 0770
lock_method flock
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def remove_empty_rule_updates() -> None:
    if UPDATES_DIR.is_dir() and not any(UPDATES_DIR.rglob("*.cf")):
        shutil.rmtree(UPDATES_DIR)


def _run_user() -> pwd.struct_passwd | None:
    """The user spamd must run as when we are root (it refuses to stay root)."""
    if os.geteuid() != 0:
        return None
    for name in ("debian-spamd", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user for spamd (debian-spamd or nobody)")


class Spamd:
    def __init__(self, workdir: Path, *, children: int = 5) -> None:
        self.user = _run_user()
        if self.user is None:
            workdir.mkdir(parents=True, exist_ok=True)
            self.home = workdir
            self._own_home = False
        else:
            self.home = Path(tempfile.mkdtemp(prefix="spamgate-spamd-"))
            self._own_home = True
        self.site = self.home / "site"
        self.bayes = self.home / "bayes"
        self.site.mkdir(exist_ok=True)
        self.bayes.mkdir(exist_ok=True)
        # The package's plugin loaders (*.pre) and Debian tweaks, plus our isolated Bayes.
        for f in [*SITE_CONFIG.glob("*.pre"), *SITE_CONFIG.glob("*.cf")]:
            if f.name != "local.cf":
                shutil.copy(f, self.site / f.name)
        (self.site / "local.cf").write_text(LOCAL_CF.format(bayes=self.bayes))
        if self.user is not None:
            os.chmod(self.home, 0o755)
            for p in (self.home, self.site, self.bayes, *self.site.iterdir()):
                os.chown(p, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self.socket_path = self.home / "spamd.sock"  # spamd listens here too
        self.children = children
        self.log_path = self.home / "spamd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [
            SPAMD,
            "--listen", f"127.0.0.1:{self.port}",
            "--listen", str(self.socket_path),
            "--socketmode", "0666",
            "--allowed-ips", "127.0.0.1",
            "--nouser-config",
            "--local",
            "--allow-tell",
            "--max-children", str(self.children),
            "--siteconfigpath", str(self.site),
            "--helper-home-dir", str(self.home),
            "--syslog", str(self.log_path),
            "--pidfile", str(self.home / "spamd.pid"),
        ]  # fmt: skip
        if self.user is not None:
            cmd += ["--username", self.user.pw_name]
        return cmd

    def start(self, timeout: float = 60.0) -> None:
        remove_empty_rule_updates()
        out = (self.home / "spamd.out").open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, cwd=self.home)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"spamd exited {self.proc.returncode}:\n{self.output()}")
            if self.ping():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"spamd not answering PING after {timeout}s:\n{self.output()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING SPAMC/1.5\r\n\r\n")
                s.shutdown(socket.SHUT_WR)
                return b"PONG" in s.recv(256)
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _pids(self) -> list[int]:
        """The parent and its children (spamd pre-forks its scanning children)."""
        if not self.running or self.proc is None:
            return []
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        return pids

    def freeze(self) -> None:
        """SIGSTOP spamd and its children: connections are accepted by the kernel, never answered."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()  # a stopped (SIGSTOP) spamd would ignore SIGTERM
        stop_process(self.proc, 20)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def output(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.home / "spamd.out", self.log_path) if p.exists()]
        return "\n".join(parts)

    def bayes_magic(self) -> dict[str, int]:
        """``sa-learn --dump magic`` of this spamd's Bayes database: nspam, nham, ntokens...

        Run as spamd's user so no root-owned lock or journal file is left behind.
        """
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        res = subprocess.run(
            [SA_LEARN, "--siteconfigpath", str(self.site), "--dump", "magic"],
            capture_output=True, text=True, env=env, cwd=self.home, check=False, **kwargs,  # type: ignore[call-overload]
        )  # fmt: skip
        magic: dict[str, int] = {}
        for line in res.stdout.splitlines():
            m = re.match(r"^\S+\s+\S+\s+(\d+)\s+\S+\s+non-token data: (.+)$", line)
            if m:
                magic[m.group(2).strip()] = int(m.group(1))
        if not magic and "nspam" not in res.stdout:
            # An empty database (nothing learned yet) makes sa-learn print nothing useful.
            return {"nspam": 0, "nham": 0, "ntokens": 0}
        return magic


def start_spamd(workdir: Path, *, children: int = 5) -> Spamd:
    """Start a private spamd; call ``.close()`` when done (``.stop()``/``.start()`` in between)."""
    spamd = Spamd(workdir, children=children)
    try:
        spamd.start()
    except Exception:
        spamd.close()
        raise
    return spamd
