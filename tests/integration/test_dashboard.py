"""Every Grafana panel works: real Prometheus scraping real spamgate that handled real traffic.

Two spamgate processes are scraped: the main one in front of the private Postfix, with
spamd, NSD-served DNS lists, STARTTLS, a password file and every built-in filter the
panels need; and one whose backend is a closed port (the "backend errors" panels).
Traffic: clean, spam (GTUBE), quarantined, spoofed local sender, DNSBL-listed, DNSBL
errors and timeouts, AUTH failures up to the penalty box, a refused session, a
recipient limit, an oversized message for spamd, an observe-mode verdict, a spamd
timeout and a dead spamd, and a SIGHUP reload. It is sent in two rounds with a scrape
in between, so counters increase inside Prometheus' rate windows.

Then every panel query (dashboard variables substituted) is evaluated through
Prometheus' HTTP API and must return data, and every metric it names must be in the
/metrics exposition spamgate actually serves.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import signal
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from spamgate.proxy.tools.cost import register
from spamgate.proxy.tools.passwd import add_user
from tests.filters.attachment_samples import EICAR, attachment
from tests.filters.attachment_samples import message as att_message
from tests.integration.conftest import Spamgate, SpamgateFactory
from tests.integration.rbl_zones import ZONES
from tests.integration.services.clamd import Clamd, start_clamd
from tests.integration.services.dns import DnsServer, silent_udp_port, start_dns
from tests.integration.services.postfix import Postfix, free_port
from tests.integration.services.prometheus import Prometheus
from tests.integration.services.spamd import Spamd, start_spamd
from tests.integration.services.testca import make_ca
from tests.integration.smtp_client import RawClient, send
from tests.promql import exposition_names, metric_names, substitute

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "grafana/dashboards/spamgate.json").read_text())
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
WINDOW = "10m"


def message(subject: str, body: str = "Hello there.", sender: str = "sender@example.org", *, msgid: bool = True,
            extra: str = "") -> bytes:  # fmt: skip
    mid = f"Message-ID: <{uuid.uuid4().hex}@example.org>\r\n" if msgid else ""
    return (
        f"From: Sender <{sender}>\r\nTo: alice@example.edu\r\nSubject: {subject}\r\n{mid}"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n{extra}\r\n{body}\r\n"
    ).encode()


class CertAuthority(Protocol):
    """What make_ca() returns (named structurally: the class is being renamed)."""

    @property
    def ca_cert(self) -> Path: ...
    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...


@dataclass
class World:
    postfix: Postfix
    sg: Spamgate
    broken: Spamgate
    spamd: Spamd
    prom: Prometheus
    ca: CertAuthority


def main_config(nsd: DnsServer, silent_port: int, spamd: Spamd, qdir: Path, clamd_port: int = 1) -> str:
    return f"""
[dns]
nameservers = ["{nsd.host}"]
port = {nsd.port}
timeout = 2.0
attempts = 1

[limits]
max_recipients = 3
max_sessions_per_ip = 2
exempt_networks = []

[pipeline]
quarantine_dir = "{qdir}"

[actions]
reject = 15.0
quarantine = 10.0
add_header = 5.0

[filters.rbl]
enabled = true
order = 10
skip_private = false
reject_score = 20.0

[[filters.rbl.lists]]
zone = "zen.test"
weight = 20.0

[[filters.rbl.lists]]
zone = "dbl.test"
kind = "domain"
weight = 12.0

[[filters.rbl.lists]]
zone = "slow.test"
weight = 1.0
timeout = 0.3
nameservers = ["127.0.0.1"]
port = {silent_port}

[filters.spamassassin]
enabled = true
order = 20
host = "127.0.0.1"
port = {spamd.port}
max_size = 20000
timeout = 3.0
connect_timeout = 1.0

[filters.local_sender]
enabled = true
order = 5

[filters.sender_auth]
enabled = true
order = 25
dmarc_enforce = false

[filters.headers]
enabled = true
order = 30
mode = "observe"
reject_symbols = ["MISSING_MESSAGE_ID"]

[filters.antivirus]
enabled = true
order = 15
host = "127.0.0.1"
port = {clamd_port}

[filters.attachments]
enabled = true
order = 16

# The test's ordinary clients (127.0.0.0/27) are never greylisted or rate-limited; the
# greylisting and rate-limit panels get their data from 127.0.0.40/41 (traffic_round).
[filters.greylist]
enabled = true
delay = 1
spf = false
auto_allowlist_after = 0
allowlist_networks = ["127.0.0.0/27"]

[filters.ratelimit]
enabled = true
ip_messages_per_hour = 2
exempt_networks = ["127.0.0.0/27"]
penalty_after = 2
"""


def tls_send(port: int, ca: CertAuthority, raw: bytes) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(ca.ca_cert))
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=("127.0.0.3", 0)) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=ctx)
        smtp.ehlo("client.test")
        refused = smtp.sendmail("sender@example.org", ["alice@example.edu"], raw)
        assert refused == {}
        return smtp.noop()


def auth(port: int, source: str, user: str, password: str) -> int:
    """One AUTH PLAIN attempt on a fresh connection: the reply code, 0 if none came in 10 s."""
    blob = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    client = RawClient(port, source_address=source, timeout=10)
    try:
        client.reply()
        client.send(b"EHLO laptop.example.edu\r\n")
        client.reply()
        client.send(f"AUTH PLAIN {blob}\r\n".encode())
        return client.reply()[0]
    except (TimeoutError, ConnectionError):
        return 0
    finally:
        client.sock.close()


def refused_session(port: int, source: str) -> bytes:
    """Open one connection more than max_sessions_per_ip allows; the banner of the last."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) for _ in range(3)]
    try:
        for s in socks[:2]:
            assert s.recv(512).startswith(b"220")
        return socks[2].recv(512)
    finally:
        for s in socks:
            s.close()


def traffic_round(w: World, n: int) -> None:
    sg = w.sg
    clean = send(sg.port, "sender@example.org", ["alice@example.edu"], message(f"clean {n}"),
                 source_address="127.0.0.3")  # fmt: skip
    assert clean.delivered, clean
    assert tls_send(sg.port, w.ca, message(f"tls {n}"))[0] == 250
    spam = send(sg.port, "sender@example.org", ["alice@example.edu"], message(f"spam {n}", GTUBE),
                source_address="127.0.0.3")  # fmt: skip
    assert spam.data is not None and spam.data[0] == 550, spam
    quarantined = send(sg.port, "news@spammer.example", ["alice@example.edu"], message(f"q {n}"),
                       source_address="127.0.0.3")  # fmt: skip
    assert quarantined.data is not None and "quarantined" in quarantined.data[1], quarantined
    spoofed = send(sg.port, "secr@example.edu", ["alice@example.edu"], message(f"spoof {n}", sender="secr@example.edu"),
                   source_address="127.0.0.3")  # fmt: skip
    assert spoofed.mail[0] == 553, spoofed
    listed = send(sg.port, "sender@example.org", ["alice@example.edu"], message(f"listed {n}"),
                  source_address="127.0.0.2")  # fmt: skip
    assert listed.rcpt and listed.rcpt[0][0] == 554, listed
    dnsbl_error = send(sg.port, "sender@example.org", ["alice@example.edu"], message(f"dnsbl error {n}"),
                       source_address="127.0.0.5")  # fmt: skip
    assert dnsbl_error.delivered, dnsbl_error
    too_many = send(sg.port, "sender@example.org", [f"{u}@example.edu" for u in ("alice", "bob", "carol", "secr")],
                    message(f"rcpts {n}"), source_address="127.0.0.3")  # fmt: skip
    assert [c for c, _ in too_many.rcpt] == [250, 250, 250, 452], too_many
    oversized = message(f"oversized {n}", ("All work and no play. " * 3 + "\r\n") * 400)
    assert len(oversized) > 20000
    assert send(sg.port, "sender@example.org", ["alice@example.edu"], oversized, source_address="127.0.0.3").delivered
    no_msgid = send(sg.port, "sender@example.org", ["alice@example.edu"], message(f"observe {n}", msgid=False),
                    source_address="127.0.0.3")  # fmt: skip
    assert no_msgid.delivered, "headers is in observe mode: would reject, does not"
    assert auth(sg.port2, f"127.0.0.{20 + n}", "secr", "wrong") == 535
    assert auth(sg.port2, f"127.0.0.{20 + n}", "secr", "wrong again") == 421
    assert auth(sg.port2, "127.0.0.30", "secr", "s3cret-pass") == 235
    assert refused_session(sg.port, "127.0.0.9").startswith(b"421")
    virus = send(sg.port, "sender@example.org", ["alice@example.edu"],
                 att_message(attachment("eicar.txt", EICAR, "text/plain")), source_address="127.0.0.3")
    assert virus.data is not None and virus.data[0] == 554, virus
    exe = send(sg.port, "sender@example.org", ["alice@example.edu"], att_message(attachment("a.pdf.exe", b"MZ")),
               source_address="127.0.0.3")  # fmt: skip
    assert exe.data is not None and exe.data[0] == 554, exe
    broken = send(w.broken.port, "sender@example.org", ["alice@example.edu"], message(f"broken {n}"))
    assert broken.mail[0] // 100 == 4 or (broken.rcpt and broken.rcpt[0][0] // 100 == 4), broken
    # A client the greylist has not seen: 451 first, accepted on its retry after the delay; its
    # third message within the hour is over ip_messages_per_hour.
    newcomer = f"127.0.0.{39 + n}"
    sender = f"new{n}@example.org"  # a new triplet each round (the client network is the same /24)
    first = send(sg.port, sender, ["alice@example.edu"], message(f"grey {n}"), source_address=newcomer)
    assert first.rcpt and first.rcpt[0][0] == 451 and "Greylisted" in first.rcpt[0][1], first
    time.sleep(1.1)
    retry = send(sg.port, sender, ["alice@example.edu"], message(f"grey {n}"), source_address=newcomer)
    assert retry.delivered, retry
    third = send(sg.port, sender, ["alice@example.edu"], message(f"limit {n}"), source_address=newcomer)
    assert third.mail[0] == 451, third
    # Its second refusal puts it in the SMTP penalty box (counted after the reply), which turns its next session away.
    fourth = send(sg.port, sender, ["alice@example.edu"], message(f"limit {n}"), source_address=newcomer)
    assert fourth.mail[0] == 451, fourth
    deadline = time.monotonic() + 10
    while True:
        with smtplib.SMTP("127.0.0.1", sg.port, timeout=30, source_address=(newcomer, 0)) as smtp:
            code = smtp.ehlo("client.test")[0]
        if code == 421 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert code == 421


def exposition(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def wait_scraped(w: World, metric: str = "spamgate_sessions_total") -> None:
    """Block until Prometheus holds the value of ``metric`` both spamgates expose now."""
    for sg in (w.sg, w.broken):
        lines = exposition(sg.metrics_port).splitlines()
        total = sum(
            float(line.split()[-1]) for line in lines if line.startswith(metric + "{") or line.startswith(metric + " ")
        )
        if total:
            w.prom.wait_for(f'sum({metric}{{instance="127.0.0.1:{sg.metrics_port}"}}) >= {total}', timeout=60)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DnsServer, Spamd, int, Clamd]]:
    nsd = start_dns(ZONES, tmp_path_factory.mktemp("nsd"))
    spamd = start_spamd(tmp_path_factory.mktemp("spamd"))
    clamd = start_clamd(tmp_path_factory.mktemp("clamd"))
    try:
        with silent_udp_port() as silent:
            yield nsd, spamd, silent, clamd
    finally:
        clamd.stop()
        spamd.close()
        nsd.stop()


@pytest.fixture
def world(
    services: tuple[DnsServer, Spamd, int, Clamd], postfix: Postfix, spamgate: SpamgateFactory, tmp_path: Path
) -> Iterator[World]:
    nsd, spamd, silent, clamd = services
    if not spamd.running:
        spamd.start()
    ca = make_ca(tmp_path / "ca")
    passwd = tmp_path / "passwd"
    add_user(passwd, "secr", "s3cret-pass")
    sg = spamgate(
        main_config(nsd, silent, spamd, tmp_path / "quarantine", clamd.port),
        listen_toml=(
            f'[[listen]]\nname = "mx"\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
            f'tls_cert = "{ca.cert}"\ntls_key = "{ca.key}"\n\n'
            '[[listen]]\nname = "submission"\nhost = "127.0.0.1"\nport = @PORT2@\nrole = "submission"\n'
            "allow_plaintext_auth = true\n"
        ),
        auth_toml=(
            f'local_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{passwd}"\n'
            "max_failures = 2\npenalty_seconds = 300\n"
        ),
    )
    # Its backend and its shared state store (Redis) are both down: backend and Redis-health panels.
    broken = spamgate(f'[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:{free_port()}/0"\ntimeout = 0.5\n',
                      backend_toml=f'host = "127.0.0.1"\nport = {free_port()}\nconnect_timeout = 2\n')
    prom = Prometheus(tmp_path / "prom", targets=[f"127.0.0.1:{sg.metrics_port}", f"127.0.0.1:{broken.metrics_port}"])
    prom.start()
    try:
        w = World(postfix, sg, broken, spamd, prom, ca)
        w.prom.wait_for('count(up{job="spamgate"} == 1) == 2', timeout=60)
        yield w
    finally:
        prom.stop()


def panel_targets() -> list[tuple[str, str, str]]:
    return [
        (p["title"], t["refId"], t["expr"]) for p in DASHBOARD["panels"] if p["type"] != "row" for t in p["targets"]
    ]


def dashboard_variables() -> dict[str, str]:
    out = {}
    for v in DASHBOARD["templating"]["list"]:
        if v["type"] == "textbox":
            out[v["name"]] = v["query"]
        elif v["type"] == "query":
            out[v["name"]] = v["allValue"]
    return out


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result]


def test_every_panel_has_data_from_real_traffic(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    w = world
    traffic_round(w, 1)
    wait_scraped(w)
    traffic_round(w, 2)

    # spamd hangs (the engine's per-filter timeout fires), then dies (the filter's own error)
    w.spamd.freeze()
    try:
        hung = send(w.sg.port, "sender@example.org", ["alice@example.edu"], message("spamd hangs"),
                    source_address="127.0.0.3")  # fmt: skip
    finally:
        w.spamd.thaw()
    assert hung.delivered, "on_error = continue: a hung spamd delays mail, never loses it"
    w.spamd.stop()
    # twice, a scrape apart: a labelled counter is born at its first increment, and rate()
    # needs two samples of it
    for n in (1, 2):
        dead = send(w.sg.port, "sender@example.org", ["alice@example.edu"], message(f"spamd dead {n}"),
                    source_address="127.0.0.3")  # fmt: skip
        assert dead.delivered
        w.sg.signal(signal.SIGHUP)
        w.prom.wait_for(f'spamgate_config_reloads_total{{result="ok"}} >= {n}', timeout=60)
        wait_scraped(w, "spamgate_spamd_errors_total")
    wait_scraped(w)

    exported = exposition_names(exposition(w.sg.metrics_port)) | exposition_names(exposition(w.broken.metrics_port))
    variables = dashboard_variables()
    problems = []
    for title, ref, expr in panel_targets():
        missing = metric_names(expr) - exported
        if missing:
            problems.append(f"{title}/{ref}: spamgate does not export {sorted(missing)}")
            continue
        result = w.prom.query(substitute(expr, variables, WINDOW))["result"]
        if not result:
            problems.append(f"{title}/{ref}: no data")
        elif all(math.isnan(v) for v in values(result)):
            problems.append(f"{title}/{ref}: only NaN")
    assert not problems, "\n".join(problems)

    # a few panels checked for the facts the traffic made
    def panel(title: str, ref: str = "A") -> dict[str, float]:
        expr = next(e for t, r, e in panel_targets() if t == title and r == ref)
        result = w.prom.query(substitute(expr, variables, WINDOW))["result"]
        return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in result}

    assert set(panel("Spoofing attempts refused / s")) == {'{"phase": "mail"}'}
    assert min(panel("Spoofing attempts refused / s").values()) > 0
    assert panel("AUTH failures / s")["{}"] > 0
    assert panel("Penalty-box entries / s")["{}"] > 0
    verdicts = panel("Enforced filter verdicts / s")
    assert '{"decision": "reject", "filter": "rbl"}' in verdicts
    assert '{"decision": "reject", "filter": "local_sender"}' in verdicts
    assert '{"decision": "reject", "filter": "headers"}' in panel("Observe mode: would have been enforced / s")
    actions = panel("Final actions (dashboard range)")
    for action in ("accept", "reject", "quarantine"):
        assert actions[json.dumps({"action": action})] > 0, actions
    assert '{"kind": "connect"}' in panel("Backend errors / s by kind")
    assert '{"kind": "connect"}' in panel("spamd errors / s by kind")
    assert '{"reason": "size"}' in panel("spamd skipped / s by reason")
    assert '{"filter": "spamassassin", "kind": "timeout"}' in panel("Filter errors / s by filter and kind")
    tls = panel("TLS sessions / s by version")
    assert any("TLS" in k for k in tls), tls
    dnsbl = panel("DNSBL lookups / s by list and result")
    for result in ("listed", "not_listed", "error", "timeout"):
        assert any(f'"result": "{result}"' in k for k in dnsbl), (result, dnsbl)
    money = panel("Money saved per year")["{}"]
    assert money > 0

    # spamgate cost --from-metrics measures the same rate the panel prices
    p = argparse.ArgumentParser(prog="spamgate")
    register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(
        ["cost", "--employees", "680", "--workdays", "230", "--hourly-wage", "15", "--seconds-per-spam", "3",
         "--from-metrics", w.prom.url, "--window", WINDOW, "--json"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["cost_per_year"] == pytest.approx(money, rel=0.05)


def test_health_endpoints_of_a_real_spamgate(world: World) -> None:
    def get(port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    assert get(world.sg.metrics_port, "/healthz") == (200, "ok\n")
    # the main instance's slow.test list points at a resolver that never answers: rbl fails open,
    # so the instance stays ready but says it is degraded
    status, body = get(world.sg.metrics_port, "/readyz")
    assert status == 200
    assert body.startswith("ready, degraded: ") and "filter:rbl" in body, body
    assert "backend" not in body and "spamassassin" not in body, body
    assert get(world.broken.metrics_port, "/healthz") == (200, "ok\n")
    status, body = get(world.broken.metrics_port, "/readyz")
    assert status == 503
    assert "backend" in body
