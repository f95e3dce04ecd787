"""Floods against a real spamgate in front of real Postfix: limits hold, memory stays bounded,
and a well-behaved client sending at the same time is still served (its mail is delivered).

Memory is measured (RSS of the spamgate process before and after each flood, printed) and
bounded generously; nothing here asserts a duration.
"""

from __future__ import annotations

import base64
import concurrent.futures
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from argon2 import PasswordHasher

from spamgate.proxy.tools.passwd import add_user
from tests.hardening.live import running_spamgate
from tests.hardening.support import rss_bytes, starttls_flood_client
from tests.integration.conftest import Spamgate
from tests.integration.services.postfix import Postfix, free_port
from tests.integration.services.testca import TestCerts, make_ca
from tests.integration.smtp_client import RawClient, send

pytestmark = pytest.mark.integration

MB = 1024 * 1024
RSS_GROWTH_BOUND = 200 * MB
COMMAND_TIMEOUT = 4
USER, PASSWORD = "bob@example.edu", "builder of bridges"
RSS_SEEN: dict[str, tuple[int, int]] = {}


@dataclass
class Gate:
    sg: Spamgate
    postfix: Postfix
    submission: int
    certs: TestCerts

    @property
    def pid(self) -> int:
        assert self.sg.proc is not None
        return self.sg.proc.pid


@pytest.fixture(scope="module")
def gate(postfix: Postfix, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    d = tmp_path_factory.mktemp("floods")
    certs = make_ca(d / "ca")
    passwd = d / "passwd"
    # argon2 with a low cost: 200 guesses at the default cost (~0.3 s of CPU each here) would
    # make the flood a CPU benchmark; the cost is the operator's choice, the lock-out is not.
    add_user(passwd, USER, PASSWORD, PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))
    mx, sub = free_port(), free_port()
    listen = (
        f'[[listen]]\nname = "mx"\nhost = "127.0.0.1"\nport = {mx}\nrole = "mx"\n'
        f'tls_cert = "{certs.cert}"\ntls_key = "{certs.key}"\n'
        f'[[listen]]\nname = "submission"\nhost = "127.0.0.1"\nport = {sub}\nrole = "submission"\n'
        "allow_plaintext_auth = true\n"
    )
    extra = (
        # Loopback is exempt from the per-IP limit by default; here the 127.0.0.x aliases play outsiders.
        f"[limits]\ncommand_timeout = {COMMAND_TIMEOUT}\nexempt_networks = []\n\n"
        f'[auth]\nlocal_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{passwd}"\n'
        "max_failures = 2\npenalty_seconds = 600\n"
    )
    with running_spamgate(f'host = "127.0.0.1"\nport = {postfix.port}\ntimeout = 30\n', extra, listen, mx) as sg:
        yield Gate(sg, postfix, sub, certs)
    for name, (before, after) in RSS_SEEN.items():
        print(f"flood {name}: spamgate RSS {before / MB:.1f} MB -> {after / MB:.1f} MB")


def canary(g: Gate, source: str = "127.0.0.1") -> None:
    """A normal client's message goes through, end to end."""
    mid = uuid.uuid4().hex
    msg = f"From: c@example.org\r\nTo: alice@example.edu\r\nMessage-ID: <{mid}@canary>\r\n\r\nalive\r\n".encode()
    res = send(g.sg.port, "c@example.org", ["alice@example.edu"], msg, source_address=source, timeout=60)
    assert res.delivered, (res, g.sg.log()[-3000:])
    g.postfix.wait_for(lambda m: mid.encode() in m, timeout=60)


def flooded(g: Gate, name: str, flood: Callable[[], None]) -> None:
    """Run ``flood`` in a thread while the canary is served; bound the memory it cost."""
    before = rss_bytes(g.pid)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            flood()
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    canary(g)
    t.join(300)
    assert not t.is_alive(), f"{name} flood did not finish"
    if errors:
        raise errors[0]
    canary(g)
    after = rss_bytes(g.pid)
    RSS_SEEN[name] = (before, after)
    assert after - before < RSS_GROWTH_BOUND, f"{name}: RSS {before / MB:.0f} -> {after / MB:.0f} MB"
    assert g.sg.proc is not None and g.sg.proc.poll() is None
    assert "Traceback" not in g.sg.log()


def _session(port: int, source: str = "127.0.0.1") -> RawClient:
    c = RawClient(port, source_address=source, timeout=60)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO flood.test")[0] == 250
    return c


def _replies(c: RawClient, n: int) -> list[int]:
    return [c.reply()[0] for _ in range(n)]


def test_slowloris_sessions_time_out_and_per_ip_limit_holds(gate: Gate) -> None:
    """900 half-open sessions from 18 addresses (50 each, the per-IP limit) plus 5 over the limit
    per address, each sending a byte a second and never a newline."""
    sources = [f"127.0.0.{i}" for i in range(10, 28)]
    socks: list[socket.socket] = []
    refused = 0

    def flood() -> None:
        nonlocal refused
        for src in sources:
            for _ in range(55):
                s = socket.create_connection(("127.0.0.1", gate.sg.port), timeout=30, source_address=(src, 0))
                socks.append(s)
        # Read the greetings: 50 per address get 220, the rest 421 and are closed.
        for s in socks:
            if s.recv(200).startswith(b"421"):
                refused += 1
        deadline = time.monotonic() + COMMAND_TIMEOUT + 3
        while time.monotonic() < deadline:
            for s in socks:
                try:
                    s.send(b"N")
                except OSError:
                    pass
            time.sleep(1)

    try:
        flooded(gate, "slowloris", flood)
        assert refused == 5 * len(sources)
        # The line never completed: every session was closed by the command timeout.
        open_ = 0
        for s in socks:
            s.settimeout(5)
            try:
                data = s.recv(4096)
                while data:
                    data = s.recv(4096)
            except TimeoutError:
                open_ += 1
            except OSError:
                pass
        assert open_ == 0
    finally:
        for s in socks:
            s.close()


def test_ten_thousand_noops_and_rset_loops(gate: Gate) -> None:
    def flood() -> None:
        c = _session(gate.sg.port, "127.0.0.30")
        try:
            c.send(b"NOOP\r\n" * 10_000)
            assert set(_replies(c, 10_000)) == {250}
            c.send(b"RSET\r\n" * 10_000)
            assert set(_replies(c, 10_000)) == {250}
            # With a transaction open each RSET reaches Postfix, whose smtpd_junk_command_limit (100)
            # then tarpits the (real) client: keep the loop under it.
            c.send(b"MAIL FROM:<a@example.org>\r\nRSET\r\n" * 40)
            assert set(_replies(c, 80)) == {250}
            assert c.cmd("QUIT")[0] == 221
        finally:
            c.close()

    flooded(gate, "noop_rset", flood)


def test_ten_thousand_rcpts_capped_by_max_recipients(gate: Gate) -> None:
    def flood() -> None:
        c = _session(gate.sg.port, "127.0.0.31")
        try:
            assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
            c.send(b"RCPT TO:<alice@example.edu>\r\n" * 10_000)
            codes = _replies(c, 10_000)
            assert codes[:100] == [250] * 100
            assert set(codes[100:]) == {452}
            assert c.cmd("RSET")[0] == 250
        finally:
            c.close()

    flooded(gate, "rcpt_10k", flood)


def test_one_megabyte_header_and_one_megabyte_line(gate: Gate) -> None:
    def flood() -> None:
        c = _session(gate.sg.port, "127.0.0.32")
        try:
            # One header line of 1 MB: over max_line_length, refused, session survives.
            assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            c.send(b"X-Big: " + b"h" * MB + b"\r\n\r\nbody\r\n.\r\n")
            code, text = c.reply()
            assert code == 500 and text.startswith("5.5.2 Line too long"), (code, text)
            # The same megabyte folded into 1,000-byte lines is a legal header: it is handled
            # (Postfix decides), not a crash.
            mid = uuid.uuid4().hex
            assert c.cmd("MAIL FROM:<a@example.org>")[0] == 250
            assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250
            assert c.cmd("DATA")[0] == 354
            folded = b"X-Big: start" + b"".join(b"\r\n\t" + b"f" * 998 for _ in range(MB // 1000))
            c.send(f"Message-ID: <{mid}@big>\r\n".encode() + folded + b"\r\n\r\nbody\r\n.\r\n")
            code, _ = c.reply()
            assert code in (250, 552, 554)
            # A 1 MB command line with no newline yet, then the newline: one 500, then normal service.
            c.send(b"A" * MB)
            time.sleep(0.5)
            c.send(b"\r\n")
            assert c.reply() == (500, "5.5.2 Command line too long")
            assert c.cmd("NOOP")[0] == 250
        finally:
            c.close()

    flooded(gate, "megabyte_lines", flood)


def test_pipelined_garbage_after_data(gate: Gate) -> None:
    def flood() -> None:
        c = _session(gate.sg.port, "127.0.0.33")
        mid = uuid.uuid4().hex
        try:
            garbage = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"") * 4
            c.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.edu>\r\nDATA\r\n"
                   + f"Message-ID: <{mid}@garbage>\r\n\r\nbody\r\n.\r\n".encode()
                   + (garbage + b"\r\n") * 50)
            assert _replies(c, 4) == [250, 250, 354, 250]
            # The garbage lines are bad commands: max_errors of them, then 421 and the door.
            codes = []
            while True:
                try:
                    codes.append(c.reply()[0])
                except ConnectionError:
                    break
            assert codes[-1] == 421 and set(codes[:-1]) <= {500, 501, 502}, codes
        finally:
            c.close()
        gate.postfix.wait_for(lambda m: mid.encode() in m)
        assert sum(mid.encode() in m for m in gate.postfix.messages()) == 1

    flooded(gate, "garbage_after_data", flood)


def test_tls_handshake_flood(gate: Gate) -> None:
    """300 STARTTLS sessions: a third complete the handshake, a third send garbage instead of a
    ClientHello, a third go silent; all at once."""
    ctx = ssl.create_default_context(cafile=str(gate.certs.ca_cert))

    def one(i: int) -> str:
        return starttls_flood_client(gate.sg.port, i, ctx, source=f"127.0.1.{i % 50 + 1}", timeout=COMMAND_TIMEOUT + 20)

    def flood() -> None:
        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            results = list(pool.map(one, range(300)))
        assert results.count("tls") == 100 and results.count("closed") == 200, results

    flooded(gate, "tls_handshake", flood)


def test_auth_brute_force_from_100_addresses(gate: Gate) -> None:
    """Each address guesses until the penalty box closes it (421), and is refused (454) after."""

    def attack(i: int) -> tuple[list[int], int]:
        src = f"127.0.2.{i + 1}"
        codes = []
        c = _session(gate.submission, src)
        try:
            for n in range(3):
                token = base64.b64encode(f"\0{USER}\0guess-{i}-{n}".encode()).decode()
                code, _ = c.cmd(f"AUTH PLAIN {token}")
                codes.append(code)
                if code == 421:
                    break
        except ConnectionError:
            codes.append(-1)
        finally:
            c.close()
        again = _session(gate.submission, src)
        try:
            token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
            later = again.cmd(f"AUTH PLAIN {token}")[0]
        finally:
            again.close()
        return codes, later

    def flood() -> None:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            results = list(pool.map(attack, range(100)))
        for codes, later in results:
            assert codes == [535, 421], codes
            # Locked out even with the right password: the box holds the address, not the guess.
            assert later == 454
        # The real user from an address that did not guess logs in.
        c = _session(gate.submission, "127.0.0.1")
        try:
            token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
            assert c.cmd(f"AUTH PLAIN {token}")[0] == 235
        finally:
            c.close()

    flooded(gate, "auth_brute_force", flood)
