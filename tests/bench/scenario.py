"""What the benchmark feeds spamgate: its DNS zones, its configs and the mixed corpus.

The "production config" is what issue 11 says admins run: INFO logs, metrics on, the
connect-time reverse lookup on, answered by a local resolver (NSD on loopback serving a
reverse zone for 127.0.0.0/8 and the forward names, so FCrDNS really completes).
"""

from __future__ import annotations

import datetime
import email.utils
from pathlib import Path

from tests.bench.load import CorpusItem

__all__ = ["LISTED_IP", "LOCAL_DOMAIN", "WORKERS", "corpus", "probe_message", "spamgate_config", "zones"]

LOCAL_DOMAIN = "example.edu"
LISTED_IP = "127.0.0.2"  # listed in the test DNSBL zen.test
WORKERS = 2  # the `workers = N` path: one process per core on this 2-core machine
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def zones() -> dict[str, str]:
    """NSD zones: PTR for every 127.0.0.x, the forward names they point to, and the DNSBL."""
    from tests.integration.services.dns import zone

    ptr = [f"{i} PTR c{i}.clients.bench.test." for i in range(1, 255)]
    fwd = [f"c{i} A 127.0.0.{i}" for i in range(1, 255)]
    rbl = ["2.0.0.127 A 127.0.0.2", '2.0.0.127 TXT "listed in the benchmark DNSBL"']
    return {
        "0.0.127.in-addr.arpa": zone("0.0.127.in-addr.arpa", ptr, ttl=3600),
        "clients.bench.test": zone("clients.bench.test", fwd, ttl=3600),
        "zen.test": zone("zen.test", rbl),
    }


CHEAP = f"""
[auth]
local_domains = ["{LOCAL_DOMAIN}"]
relay_domains = ["bench.test"]   # smtp-source's recipients, as Postfix's relay_domains and Haraka's host_list

[filters.local_sender]
enabled = true

[filters.headers]
enabled = true

[filters.rbl]
enabled = true
skip_private = false          # the benchmark's clients are 127.0.0.x
reject_score = 3.0

[[filters.rbl.lists]]
zone = "zen.test"
kind = "ip"
weight = 3.0
answers = "127.0.0.2..127.0.0.11"
"""

SPAMASSASSIN = """
[filters.spamassassin]
enabled = true
order = 500
host = "127.0.0.1"
port = {spamd_port}
max_concurrency = {children}
"""


def spamgate_config(kind: str, *, work: Path, port: int, backend: int, dns_port: int, metrics_port: int,
                    spamd_port: int = 0, children: int = 5) -> str:  # fmt: skip
    """kind: production | cheap | workers | spamassassin (cheap set + spamd)."""
    text = f"""# spamgate benchmark, {kind} config (written by tests/bench/bench.py)
[server]
hostname = "mx.bench.test"
state_dir = "{work}/state-{kind}"
log_level = "info"
{f"workers = {WORKERS}" if kind == "workers" else ""}

[[listen]]
host = "127.0.0.1"
port = {port}
{"reuse_port = true" if kind == "workers" else ""}

[backend]
host = "127.0.0.1"
port = {backend}

[dns]
nameservers = ["127.0.0.1"]
port = {dns_port}

[metrics]
enabled = true
host = "127.0.0.1"
port = {metrics_port}
"""
    if kind in ("cheap", "spamassassin"):
        text += CHEAP
    if kind == "spamassassin":
        text += SPAMASSASSIN.format(spamd_port=spamd_port, children=children)
    return text


def _message(subject: str, sender: str, body_line: str, size: int) -> bytes:
    head = (
        f"From: Sender <{sender}>\r\nTo: <rcpt@bench.test>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{abs(hash(subject))}@src.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = (body_line + "\r\n").encode()
    body = line * (max(size - len(head), len(line)) // len(line) + 1)
    return head + body[: max(size - len(head), len(line))]


def probe_message(size: int = 4096) -> CorpusItem:
    """A message shaped like smtp-source's (From, To, Date, Message-Id, numbered lines of X):
    the paced latency client and spamd-alone then send what the smtp-source runs send."""
    date = email.utils.format_datetime(datetime.datetime.now(datetime.UTC))
    head = (f"From: <sender@src.test>\r\nTo: <rcpt@bench.test>\r\nDate: {date}\r\n"
            f"Message-Id: <probe.{size}@src.test>\r\n\r\n").encode()  # fmt: skip
    lines, total, i = [], len(head), 1
    while total + 81 <= size:
        line = (f"{i}" + "X" * 79)[:79].encode() + b"\r\n"
        lines.append(line)
        total, i = total + len(line), i + 1
    return CorpusItem("ham", "sender@src.test", "rcpt@bench.test", head + b"".join(lines))


def corpus(size: int = 4096) -> list[CorpusItem]:
    """Ham, spam (GTUBE), a spoofed local sender and a DNSBL-listed client, in equal parts."""
    ham = probe_message(size)
    spam = _message("cheap meds", "promo@src.test", f"Buy now! {GTUBE}", size)
    spoof = _message("urgent: wire transfer", f"secr@{LOCAL_DOMAIN}", "Please pay the invoice today.", size)
    listed = _message("hello", "someone@src.test", "An ordinary note from a listed host.", size)
    return [
        ham,
        CorpusItem("spam", "promo@src.test", "rcpt@bench.test", spam),
        CorpusItem("spoofed", f"secr@{LOCAL_DOMAIN}", "rcpt@bench.test", spoof),
        CorpusItem("listed", "someone@src.test", "rcpt@bench.test", listed, source_ip=LISTED_IP),
    ]
