"""A private, real Dovecot (Debian ``dovecot-core``) that only does authentication.

``dovecot -F -c CONF`` in the foreground with no mail protocols, its own base_dir and
state_dir, a passwd-file passdb (SHA512-CRYPT hashes made by ``doveadm pw``) and an
auth ``unix_listener`` that DovecotAuth connects to, like Postfix's ``smtpd_sasl_path``.
Stopped by PID.

Dovecot's auth process runs as the ``dovecot`` user, which cannot enter pytest's 0700
temp tree, so the directory is made under the system temp dir and removed by close().
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tests.integration.services.process import stop_process

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"

CONF = """\
protocols =
listen = 127.0.0.1
base_dir = {home}/run
state_dir = {home}/state
instance_name = spamgate-test-{name}
log_path = {home}/dovecot.log
ssl = no
auth_mechanisms = plain login
auth_failure_delay = {failure_delay}
auth_username_format = %Lu
passdb {{
  driver = passwd-file
  args = {home}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={home}
}}
service auth {{
  unix_listener {home}/auth-client {{
    mode = 0666
  }}
}}
"""


def hash_password(password: str) -> str:
    out = subprocess.run(
        [DOVEADM, "pw", "-s", "SHA512-CRYPT", "-p", password], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


class Dovecot:
    def __init__(self, users: Mapping[str, str], *, failure_delay: str = "0") -> None:
        self.home = Path(tempfile.mkdtemp(prefix="spamgate-dovecot-"))
        self.home.chmod(0o755)
        for sub in ("run", "state"):
            (self.home / sub).mkdir()
        self.socket_path = str(self.home / "auth-client")
        self.passwd = self.home / "passwd"
        self.passwd.write_text("".join(f"{u}:{hash_password(p)}::::::\n" for u, p in users.items()))
        self.passwd.chmod(0o644)
        self.conf = self.home / "dovecot.conf"
        self.conf.write_text(CONF.format(home=self.home, name=self.home.name, failure_delay=failure_delay))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        out = (self.home / "dovecot.out").open("ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited {self.proc.returncode}:\n{self.output()}")
            if Path(self.socket_path).exists():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot auth socket did not appear after {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        stop_process(self.proc, 15)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def output(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in (self.home / "dovecot.out", self.home / "dovecot.log") if p.exists()
        )


def start_dovecot(users: Mapping[str, str], *, failure_delay: str = "0") -> Dovecot:
    """Start a private auth-only Dovecot; call ``.close()`` when done."""
    dv = Dovecot(users, failure_delay=failure_delay)
    try:
        dv.start()
    except Exception:
        dv.close()
        raise
    return dv
