"""Two spamgate instances behind a real HAProxy (send-proxy-v2) sharing one real Redis, Postfix behind.

The client connects from 127.0.0.5 (a loopback alias), so the real client is told apart from
HAProxy's own 127.0.0.1 everywhere it should show up.
"""

from __future__ import annotations

import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spamgate.proxy.tools.passwd import add_user
from tests.integration.conftest import Spamgate
from tests.integration.services.haproxy import HAProxy
from tests.integration.services.postfix import Postfix, free_port
from tests.integration.services.redis import RedisServer

CLIENT = "127.0.0.5"
LISTEN = ('[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\nproxy_protocol = true\n'
          'trusted_proxies = ["127.0.0.1/32"]\nallow_plaintext_auth = true\n')
FILTERS = """
[filters.greylist]
enabled = true
delay = 2
spf = false
auto_allowlist_after = 0
on_state_error = "continue"

[filters.ratelimit]
enabled = true
ip_messages_per_hour = 3
on_state_error = "continue"
"""


Cluster = tuple[Spamgate, Spamgate, HAProxy]


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


def _instance(work: Path, postfix: Postfix, redis: RedisServer, passwd: Path) -> Spamgate:
    work.mkdir()
    port, mport = free_port(), free_port()
    config = (f'[server]\nhostname = "spamgate.test"\nstate_dir = "{work}/state"\nshutdown_grace = 2\n'
              f"{LISTEN.replace('@PORT@', str(port))}\n[backend]\nhost = \"127.0.0.1\"\nport = {postfix.port}\n"
              f'[metrics]\nhost = "127.0.0.1"\nport = {mport}\n[dns]\nreverse_lookup = false\n'
              f'[state]\nbackend = "redis"\nurl = "{redis.url}"\ntimeout = 0.5\n'
              f'[auth]\nbackend = "file"\npassword_file = "{passwd}"\nmax_failures = 2\npenalty_seconds = 300\n'
              f"{FILTERS}")
    sg = Spamgate(work, config, port, 0, mport)
    sg.start()
    return sg


@pytest.fixture(scope="module")
def cluster(postfix: Postfix, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Started once for the module (two Python processes take seconds each); tests use distinct clients."""
    work = tmp_path_factory.mktemp("cluster")
    passwd = work / "passwd"
    add_user(passwd, "secr", "s3cret-enough")
    a, b = _instance(work / "a", postfix, redis, passwd), _instance(work / "b", postfix, redis, passwd)
    hap = HAProxy(work, {"a": a.port, "b": b.port})
    hap.start()
    yield a, b, hap
    hap.stop()
    a.stop()
    b.stop()


def client(port: int, source: str = CLIENT) -> smtplib.SMTP:
    smtp = smtplib.SMTP(timeout=20, source_address=(source, 0))
    smtp.connect("127.0.0.1", port)
    smtp.ehlo("client.example.org")
    return smtp


def send(port: int, sender: str, rcpt: str, subject: str, source: str = CLIENT) -> tuple[int, bytes]:
    """One transaction; returns the RCPT (or DATA) reply."""
    smtp = client(port, source)
    try:
        smtp.mail(sender)
        code, msg = smtp.rcpt(rcpt)
        if code != 250:
            return code, msg
        return smtp.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
    finally:
        smtp.close()


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise TimeoutError


def test_greylisted_via_a_passes_via_b_and_postfix_sees_the_real_client(
    cluster: Cluster, postfix: Postfix
) -> None:
    a, b, hap = cluster
    code, msg = send(hap.frontends["a"], "x@sender.example", "alice@example.edu", "grey-1")
    assert code == 451 and b"Greylisted, please try again in" in msg
    time.sleep(2.2)
    code, _ = send(hap.frontends["b"], "x@sender.example", "alice@example.edu", "grey-1")
    assert code == 250
    postfix.wait_for(lambda m: b"grey-1" in m)
    # XCLIENT gave Postfix the client HAProxy relayed, not HAProxy's own address.
    wait_until(lambda: f"client=unknown[{CLIENT}]" in postfix.maillog() or f"[{CLIENT}]" in postfix.maillog())
    assert f"connect client=[{CLIENT}]" in a.log() and f"connect client=[{CLIENT}]" in b.log()
    # HAProxy's health checks (PROXY LOCAL every 300 ms, for seconds now) are no sessions in the logs
    # and no errors; the one 127.0.0.1 session per instance is the fixture's port probe through HAProxy.
    assert "is DOWN" not in hap.log()
    for sg in (a, b):
        assert sg.log().count("connect client=[127.0.0.1]") <= 1
        assert "ERROR" not in sg.log()


def test_a_rate_limit_hit_through_a_holds_through_b(cluster: Cluster) -> None:
    _, b, hap = cluster
    codes = []
    for i, port in enumerate([hap.frontends["a"]] * 3 + [hap.frontends["b"]]):
        smtp = client(port, "127.0.0.6")
        codes.append(smtp.mail(f"r{i}@sender.example")[0])
        smtp.close()
    assert codes == [250, 250, 250, 451]
    assert "limit=ip_messages_per_hour" in b.log()


def test_a_proxy_header_from_an_untrusted_address_is_refused(cluster: Cluster) -> None:
    a, _, _ = cluster
    with socket.create_connection(("127.0.0.1", a.port), source_address=(CLIENT, 0), timeout=10) as s:
        greeting = s.recv(1024)
        assert greeting.startswith(b"220")  # an untrusted client is a plain SMTP client...
        s.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 25\r\n")
        assert s.recv(1024).startswith(b"554 5.7.0 PROXY header not accepted")  # ...that cannot claim an address
        assert s.recv(1024) == b""
    assert "203.0.113.9" not in a.log()


def test_a_trusted_proxy_without_a_header_is_refused(cluster: Cluster) -> None:
    a, _, _ = cluster
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
        s.sendall(b"EHLO sneaky.example\r\n")
        assert s.recv(1024).startswith(b"421 4.7.0 Bad or missing PROXY protocol header")


def test_redis_stopped_mid_run_mail_flows_and_state_returns(
    cluster: Cluster, redis: RedisServer, postfix: Postfix
) -> None:
    a, b, hap = cluster
    redis.stop()
    for i, port in enumerate([hap.frontends["a"], hap.frontends["b"]] * 2):
        code, _ = send(port, f"down{i}@sender.example", "bob@example.edu", f"redis-down-{i}", "127.0.0.7")
        assert code == 250  # on_state_error = continue: no greylisting, no limits, mail flows
    for i in range(4):
        postfix.wait_for(lambda m, i=i: f"redis-down-{i}".encode() in m, rcpt="bob@example.edu")
    logs = a.log() + b.log()
    assert logs.count("dependency=state:greylist state=down") == 2  # one line per instance
    redis.start()
    code, _ = send(hap.frontends["a"], "back@sender.example", "bob@example.edu", "redis-back", "127.0.0.7")
    assert code == 451  # greylisting works again
    assert "dependency=state:greylist state=recovered" in a.log()


def test_an_auth_lockout_earned_through_a_is_enforced_by_b(cluster: Cluster) -> None:
    _, _, hap = cluster
    source = "127.0.0.8"

    def attempt(frontend: str, password: str) -> int:
        smtp = client(hap.frontends[frontend], source)
        smtp.user, smtp.password = "secr", password
        try:
            smtp.auth("PLAIN", smtp.auth_plain)
            return 235
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        except smtplib.SMTPServerDisconnected:
            return 421
        finally:
            smtp.close()

    assert attempt("a", "wrong") == 535
    assert attempt("a", "wrong again") == 421  # max_failures = 2: boxed through A
    # B has never seen this client, but the box is in the shared Redis: even the right password waits.
    assert attempt("b", "s3cret-enough") == 454
    assert attempt("b", "s3cret-enough") == 454

