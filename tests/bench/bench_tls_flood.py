#!/usr/bin/env python3
"""Memory under repeated STARTTLS floods: does it level off or keep growing? (on demand, not in CI)

    python tests/bench/bench_tls_flood.py [--rounds 4] [--clients 300] [--concurrency 100]

Starts spamgate (STARTTLS on, maildir backend, command_timeout 4 s) inside `unshare --net` and
runs the flood of tests/hardening/test_floods.py several times: per round, a third of the
clients complete the handshake and EHLO, a third send garbage instead of a ClientHello, a third
stay silent until spamgate closes them. After each round it prints spamgate's RSS and how many
sessions it still counts as open (spamgate_sessions_active: must be back to 0).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.netns import enter_netns
from tests.hardening.support import rss_bytes, starttls_flood_client
from tests.integration.services.testca import make_ca

PORT, METRICS_PORT = 32611, 32612


def _rss_mb(pid: int) -> float:
    return rss_bytes(pid) / 1024 / 1024


def _open_sessions() -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("spamgate_sessions_active{"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args()
    enter_netns(__file__, sys.argv[1:])
    work = Path(tempfile.mkdtemp(prefix="spamgate-bench-tls-"))
    certs = make_ca(work / "ca")
    cfg = work / "spamgate.toml"
    cfg.write_text(
        f'[[listen]]\nhost = "127.0.0.1"\nport = {PORT}\ntls_cert = "{certs.cert}"\ntls_key = "{certs.key}"\n'
        f'[backend]\nurl = "maildir:{work}/maildir"\n[dns]\nreverse_lookup = false\n'
        f'[metrics]\nport = {METRICS_PORT}\n[limits]\ncommand_timeout = 4\n'
    )
    log = open(work / "spamgate.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "spamgate.proxy", "run", "-c", str(cfg)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while b"spamgate ready" not in (work / "spamgate.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"spamgate did not start: {(work / 'spamgate.log').read_text()[-2000:]}")
            time.sleep(0.1)
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        print(f"{args.clients} STARTTLS clients per round, {args.concurrency} at once "
              "(a third complete TLS, a third garbage, a third silent)\n")
        print("| round | outcomes | spamgate RSS MB | sessions still open |")
        print("| ---: | --- | ---: | ---: |")
        print(f"| start | - | {_rss_mb(proc.pid):.1f} | {_open_sessions():.0f} |")
        for r in range(1, args.rounds + 1):
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                results = list(pool.map(lambda i: starttls_flood_client(PORT, i, ctx), range(args.clients)))
            time.sleep(1)
            outcomes = ", ".join(f"{k} {results.count(k)}" for k in sorted(set(results)))
            print(f"| {r} | {outcomes} | {_rss_mb(proc.pid):.1f} | {_open_sessions():.0f} |")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
