"""A real, private Postfix instance on a loopback port (own config, queue and mail directories).

It plays the backend MTA: XCLIENT is authorised for loopback clients, recipients in
example.edu are virtual mailboxes delivered into Maildirs, unknown ones get Postfix's
own ``550 5.1.1 ... User unknown``, and relaying elsewhere is denied.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

USERS = ("alice", "bob", "carol", "postmaster", "secr", "professor", "dave")
DOMAIN = "example.edu"

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Postfix:
    def __init__(self, workdir: Path, port: int | None = None, extra_main: str = "") -> None:
        self.dir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.etc = workdir / "etc"
        self.mail = workdir / "mail"
        self.extra_main = extra_main
        pw = pwd.getpwnam("postfix")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def _write_config(self) -> None:
        for sub in ("etc", "queue", "data", "mail"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chown(self.dir / "data", self.uid, self.gid)
        os.chown(self.mail, self.uid, self.gid)
        (self.etc / "vmailbox").write_text("".join(f"{u}@{DOMAIN} {DOMAIN}/{u}/\n" for u in USERS))
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        (self.etc / "main.cf").write_text(
            f"""\
compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = /var, /dev/stdout, /tmp
maillog_file = {self.dir}/maillog
myhostname = backend.spamgate.test
mydomain = spamgate.test
myorigin = spamgate.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = all
mynetworks = 127.0.0.254/32
relay_domains =
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions =
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.etc}/vmailbox
virtual_uid_maps = static:{self.uid}
virtual_gid_maps = static:{self.gid}
virtual_mailbox_limit = 0
message_size_limit = 104857600
alias_maps =
alias_database =
local_recipient_maps =
smtp_dns_support_level = disabled
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
default_process_limit = 250
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
{self.extra_main}
"""
        )

    def start(self) -> None:
        self._write_config()
        # postlogd (root) creates the log root-owned; postsuper, run by `postfix start` after a stop
        # under load, logs a stray queue file's warning as the mail owner and dies on a log it can't open.
        log = self.dir / "maillog"
        log.touch()
        owner = pwd.getpwnam("postfix")
        os.chown(log, owner.pw_uid, owner.pw_gid)
        subprocess.run(["postfix", "-c", str(self.etc), "check"], check=False, capture_output=True)
        r = subprocess.run(["postfix", "-c", str(self.etc), "start"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stdout}{r.stderr}\n{self.maillog()}")
        wait_port(self.port)

    def stop(self) -> None:
        stopper = subprocess.Popen(["postfix", "-c", str(self.etc), "stop"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        wedged = False
        try:
            stopper.wait(30)
        except subprocess.TimeoutExpired:
            # A wedged instance (its postlogd blocked): the stop script waits on it forever.
            wedged = True
            os.killpg(stopper.pid, 9)
            stopper.wait()
        pidfile = self.dir / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
            except OSError:
                break
            time.sleep(0.1)
        if pidfile.exists():
            pid = int(pidfile.read_text().strip() or 0)
            if pid:
                try:
                    if wedged:  # the master leads its own process group: its daemons go with it
                        os.killpg(pid, 9)
                    else:
                        os.kill(pid, 9)
                except ProcessLookupError:
                    pass

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def maillog(self) -> str:
        try:
            return (self.dir / "maillog").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def messages(self, rcpt: str = f"alice@{DOMAIN}") -> list[bytes]:
        user = rcpt.split("@")[0]
        new = self.mail / DOMAIN / user / "new"
        if not new.is_dir():
            return []
        out = []
        for f in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime):
            try:
                out.append(f.read_bytes())
            except FileNotFoundError:
                continue
        return out

    def all_messages(self) -> list[bytes]:
        out: list[bytes] = []
        for u in USERS:
            out.extend(self.messages(f"{u}@{DOMAIN}"))
        return out

    def wait_for(
        self, predicate: Callable[[bytes], bool], rcpt: str = f"alice@{DOMAIN}", timeout: float = 20.0
    ) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages(rcpt):
                if predicate(m):
                    return m
            time.sleep(0.05)
        raise TimeoutError(f"no matching message for {rcpt} within {timeout}s")

    def queue_ids_in_log(self) -> str:
        return self.maillog()


@contextlib.contextmanager
def running_postfix(extra_main: str = "", prefix: str = "spamgate-postfix-") -> Iterator[Postfix]:
    """A started private Postfix, destroyed afterwards.

    Its directory is a 0755 temporary one: Postfix's daemons drop root, and pytest's own
    temporary directories are private (0700).
    """
    work = Path(tempfile.mkdtemp(prefix=prefix))
    work.chmod(0o755)
    pf = Postfix(work, extra_main=extra_main)
    try:
        pf.start()
        yield pf
    finally:
        pf.destroy()
