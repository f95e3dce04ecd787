"""``[server] workers = 2``: a real supervisor, two real worker processes, real Postfix behind.

Minimal configs (listen + backend + the one key), reverse lookups off (no resolver here).
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from spamgate.proxy import __version__
from tests.integration.conftest import REPO, Spamgate, SpamgateFactory
from tests.integration.services.postfix import Postfix, free_port
from tests.integration.smtp_client import send

WORKERS = "workers = 2\n"
MESSAGE = b"From: <bob@example.org>\r\nTo: <alice@example.edu>\r\nSubject: %s\r\n\r\nhello\r\n"


def _wait(what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def _started(sg: Spamgate) -> list[int]:
    """The worker pids, once the supervisor says every worker is listening."""
    _wait(f"workers ready:\n{sg.log()}", lambda: "workers ready" in sg.log())
    found = re.search(r"workers ready count=2 pids=(\d+),(\d+)", sg.log())
    assert found, sg.log()
    return [int(found.group(1)), int(found.group(2))]


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out.update(int(p) for p in (task / "children").read_text().split())
    return out


def _sessions_by_worker(log: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"0": set(), "1": set()}
    for worker, session in re.findall(r"worker=(\d) session=(\w+)", log):
        out[worker].add(session)
    return out


def _metric(port: int, sample: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(sample + " ")]
    assert len(values) == 1, f"{sample}: {values}\n{body[:3000]}"
    return values[0]


def _series(port: int) -> dict[str, set[frozenset[str]]]:
    """spamgate's sample names with their label-name sets, and each family's TYPE, from one scrape."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, set[frozenset[str]]] = {}
    for line in body.splitlines():
        if line.startswith("# TYPE spamgate_"):
            out.setdefault(line, set())
        elif line.startswith("spamgate_") and not re.match(r"\w+_created[{ ]", line):
            name, _, rest = line.partition("{")
            labels = frozenset(re.findall(r'(\w+)="', rest.rsplit("}", 1)[0])) if rest else frozenset()
            out.setdefault(name.split(" ")[0], set()).add(labels)
    return out


def _open_sessions(port: int, n: int) -> list[smtplib.SMTP]:
    # Held open together: each connection has its own source port, so SO_REUSEPORT's hash
    # spreads them over both workers (all 24 on one worker: odds 2 in 16 million).
    conns = []
    for _ in range(n):
        c = smtplib.SMTP("127.0.0.1", port, timeout=30)
        assert c.ehlo("client.test")[0] == 250
        conns.append(c)
    return conns


def test_two_workers_share_the_port_deliver_and_metrics_sum(spamgate: SpamgateFactory, postfix: Postfix) -> None:
    sg = spamgate(server_toml=WORKERS)
    pids = _started(sg)
    assert sg.proc is not None and set(pids) <= _children(sg.proc.pid)
    conns = _open_sessions(sg.port, 24)
    for i, c in enumerate(conns):
        subject = f"workers-{os.getpid()}-{i}".encode()
        c.sendmail("bob@example.org", ["alice@example.edu"], MESSAGE % subject)
        c.quit()
    for i in (0, 23):
        tag = f"workers-{os.getpid()}-{i}".encode()
        postfix.wait_for(lambda m, tag=tag: tag in m)
    by_worker = _sessions_by_worker(sg.log())
    assert by_worker["0"] and by_worker["1"], "both workers served sessions"
    # One scrape of worker 0's /metrics counts the sessions of both processes.
    total = _metric(sg.metrics_port, f'spamgate_sessions_total{{listener="mx_{sg.port}"}}')
    assert total >= 24
    assert total > max(len(s) for s in by_worker.values())
    assert _metric(sg.metrics_port, 'spamgate_transactions_total{action="accept"}') >= 24
    assert _metric(sg.metrics_port, f'spamgate_build_info{{version="{__version__}"}}') == 1
    # livesum: one series, no pid label, none open now
    assert _metric(sg.metrics_port, f'spamgate_sessions_active{{listener="mx_{sg.port}"}}') == 0
    assert sg.stop() == 0


def test_sighup_reloads_every_worker_and_refuses_a_new_worker_count(spamgate: SpamgateFactory) -> None:
    sg = spamgate(server_toml=WORKERS)  # returns once one worker is ready: the other may be starting
    sg.signal(signal.SIGHUP)  # a starting worker gets it once listening (before, it would die of it)
    _started(sg)
    _wait("both reloaded once", lambda: all(f"worker={n} reloaded" in sg.log() for n in (0, 1)))
    text = sg.config_path.read_text()
    sg.config_path.write_text(text.replace('hostname = "spamgate.test"', 'hostname = "spamgate.test"\n'
                                           'banner = "ESMTP reloaded-banner"'))
    sg.signal(signal.SIGHUP)
    _wait("both reloaded", lambda: all(sg.log().count(f"worker={n} reloaded") == 2 for n in (0, 1)))
    conns = _open_sessions(sg.port, 16)
    for c in conns:
        c.quit()
    log = sg.log()
    assert all(_sessions_by_worker(log).values()), "connections landed on both workers"
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", sg.port), timeout=10) as s:
            assert b"reloaded-banner" in s.recv(512)
    sg.config_path.write_text(sg.config_path.read_text().replace(WORKERS, "workers = 3\n"))
    sg.signal(signal.SIGHUP)
    refused = "changing [server] workers needs a restart"
    _wait("both refused", lambda: all(re.search(f"worker={n} .*{re.escape(refused)}", sg.log()) for n in (0, 1)))
    assert send(sg.port, "bob@example.org", ["alice@example.edu"], MESSAGE % b"after-refused").delivered
    assert sg.stop() == 0


def test_sigterm_drains_a_transaction_and_every_worker_exits(spamgate: SpamgateFactory, postfix: Postfix) -> None:
    sg = spamgate(server_toml=WORKERS)
    pids = _started(sg)
    c = smtplib.SMTP("127.0.0.1", sg.port, timeout=30)
    c.ehlo("client.test")
    assert c.mail("bob@example.org")[0] == 250
    assert c.rcpt("alice@example.edu")[0] == 250
    assert c.docmd("DATA")[0] == 354
    c.send(b"Subject: drained-" + str(os.getpid()).encode() + b"\r\n\r\nhalf a message\r\n")
    sg.signal(signal.SIGTERM)
    _wait("both shutting down", lambda: all(f"worker={n} shutting down" in sg.log() for n in (0, 1)))
    c.send(b"the other half\r\n.\r\n")
    code, _ = c.getreply()
    c.close()
    assert code == 250, "the transaction in flight finished, with the backend's 250"
    assert sg.proc is not None
    assert sg.proc.wait(20) == 0
    postfix.wait_for(lambda m: b"drained-" + str(os.getpid()).encode() in m)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def _replaced_worker_1_serves(sg: Spamgate, pids: list[int], tag: bytes) -> None:
    """Worker 0 untouched, worker 1 a new process that serves mail; then a clean stop."""
    assert sg.proc is not None
    now = _children(sg.proc.pid)
    assert pids[0] in now and pids[1] not in now and len(now) == 2
    conns = _open_sessions(sg.port, 16)
    for i, c in enumerate(conns):
        assert c.sendmail("bob@example.org", ["alice@example.edu"], MESSAGE % (tag + b"-%d" % i)) == {}
        c.quit()
    assert _sessions_by_worker(sg.log().split("exited with signal SIGKILL", 1)[1])["1"], "the new worker 1 serves"
    assert sg.stop() == 0


def test_a_killed_worker_is_restarted_and_service_continues(spamgate: SpamgateFactory) -> None:
    sg = spamgate(server_toml=WORKERS)
    pids = _started(sg)
    os.kill(pids[1], signal.SIGKILL)
    _wait("restarted", lambda: sg.log().count("worker=1 spamgate ready") == 2)
    assert re.search(rf"worker 1 \(pid {pids[1]}\) exited with signal SIGKILL; restarting", sg.log())
    _replaced_worker_1_serves(sg, pids, b"after-kill")


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path, postfix: Postfix) -> None:
    # Valid TOML, but the worker fails building its runtime (the certificate file is missing).
    config = tmp_path / "spamgate.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path}/state"\n{WORKERS}\n'
                      f'[[listen]]\nport = {free_port()}\ntls_cert = "{tmp_path}/none.pem"\n'
                      f'tls_key = "{tmp_path}/none.key"\n'
                      f'[backend]\nport = {postfix.port}\n[dns]\nreverse_lookup = false\n[metrics]\nenabled = false\n')
    res = subprocess.run([sys.executable, "-m", "spamgate.proxy", "run", "--config", str(config)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 1, res.stderr
    assert "tls_cert/tls_key: cannot load" in res.stderr
    assert "a worker could not start" in res.stderr
    assert "restarting" not in res.stderr


def test_metric_names_labels_and_types_are_those_of_one_process(spamgate: SpamgateFactory) -> None:
    one, two = spamgate(), spamgate(server_toml=WORKERS)
    _started(two)
    for sg in (one, two):
        for i in range(4):
            assert send(sg.port, "bob@example.org", ["alice@example.edu"], MESSAGE % b"series-%d" % i).delivered
    single, multi = _series(one.metrics_port), _series(two.metrics_port)
    samples = {k: v for k, v in single.items() if not k.startswith("#")}
    assert "spamgate_sessions_total" in samples and "spamgate_build_info" in samples
    summed = {k: v for k, v in multi.items() if not k.startswith("#")}
    # prometheus-client leaves _sum out of a histogram with a negative bucket; its multiprocess
    # collector does not: one extra series, nothing lost.
    assert summed.pop("spamgate_message_score_sum") == {frozenset()}
    assert summed == samples
    # A labelled family nobody used yet has no series either way; only the TYPE line differs.
    assert {k for k in multi if k.startswith("#")} <= set(single)


def test_a_stopped_worker_is_killed_by_the_watchdog_and_restarted(spamgate: SpamgateFactory) -> None:
    # SIGSTOP: alive to the kernel and to proc.wait(), silent like an event loop stuck in a blocking call.
    sg = spamgate(server_toml=WORKERS + "worker_watchdog = 1\n")
    pids = _started(sg)
    os.kill(pids[1], signal.SIGSTOP)
    _wait("restarted", lambda: sg.log().count("worker=1 spamgate ready") == 2)
    log = sg.log()
    assert re.search(rf"worker 1 \(pid {pids[1]}\) sent no heartbeat for \d+\.\ds .*killing it", log), log
    assert re.search(rf"worker 1 \(pid {pids[1]}\) exited with signal SIGKILL; restarting", log)
    assert "worker 0 " not in log.split("sent no heartbeat", 1)[1], "the working worker was left alone"
    _replaced_worker_1_serves(sg, pids, b"after-watchdog")


def test_worker_watchdog_0_leaves_a_silent_worker_alone(spamgate: SpamgateFactory) -> None:
    sg = spamgate(server_toml=WORKERS + "worker_watchdog = 0\n")
    pids = _started(sg)
    os.kill(pids[1], signal.SIGSTOP)
    time.sleep(2.5)  # the shortest watchdog (1 s) would have struck twice over
    os.kill(pids[1], signal.SIGCONT)
    assert sg.proc is not None
    assert set(pids) == _children(sg.proc.pid)
    assert "heartbeat" not in sg.log()
    assert sg.stop() == 0


def _readyz(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10).read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def test_readyz_is_degraded_while_a_worker_is_down(spamgate: SpamgateFactory) -> None:
    sg = spamgate(server_toml=WORKERS)
    pids = _started(sg)
    _wait("ready", lambda: _readyz(sg.metrics_port) == "ready\n")
    good = sg.config_path.read_text()
    sg.config_path.write_text(good + "\n[broken\n")  # worker 1's restarts die at once: a crash loop
    os.kill(pids[1], signal.SIGKILL)
    _wait("degraded", lambda: _readyz(sg.metrics_port) == "ready, degraded: workers (failed)\n")
    assert send(sg.port, "bob@example.org", ["alice@example.edu"], MESSAGE % b"one-worker").delivered
    sg.config_path.write_text(good)
    _wait("restarted", lambda: sg.log().count("worker=1 spamgate ready") == 2, timeout=40)
    _wait("ready again", lambda: _readyz(sg.metrics_port) == "ready\n")
    assert sg.stop() == 0


def _console_status(port: int, admins: Path) -> str:
    """Log in as the admin `passwd add` created and fetch /status."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    base = f"http://127.0.0.1:{port}"
    page = opener.open(f"{base}/login", timeout=10).read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token, page
    form = urllib.parse.urlencode({"username": "root", "password": "s3cret-pass", "csrf": token.group(1)})
    opener.open(f"{base}/login", form.encode(), timeout=10).read()
    return str(opener.open(f"{base}/status", timeout=10).read().decode())


def test_the_console_status_page_counts_every_worker(spamgate: SpamgateFactory, tmp_path: Path) -> None:
    admins, cport = tmp_path / "admins", free_port()
    subprocess.run([sys.executable, "-m", "spamgate.proxy", "passwd", "add", "root", "--file", str(admins)],
                   input="s3cret-pass\n", text=True, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    sg = spamgate(f'[console]\nport = {cport}\nadmin_file = "{admins}"\n', server_toml=WORKERS)
    _started(sg)
    _wait("console", lambda: "console address=" in sg.log())
    conns = _open_sessions(sg.port, 24)
    for c in conns:  # a local sender without a login: refused by local_sender at MAIL, session kept
        assert c.mail("secr@example.edu")[0] == 553
    by_worker = _sessions_by_worker(sg.log())
    assert by_worker["0"] and by_worker["1"], "both workers hold sessions"
    page = _console_status(cport, admins)
    assert '<strong id="sessions">24</strong>' in page, page
    assert re.search(r"<td>local_sender at mail \(reject\)</td><td>24</td>", page), page
    for c in conns:
        c.quit()
    assert sg.stop() == 0
