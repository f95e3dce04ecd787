#!/usr/bin/env python3
"""Relay throughput and cost, measured side by side in one run (run on demand, not in CI).

    python tests/bench/bench_relay.py [--messages 2000] [--sessions 20] [--size 4096] [--runs 3]

Postfix's smtp-source sends N messages over S parallel sessions to:

  sink        smtp-sink directly (the ceiling: no proxy at all)
  naive       a naive aiosmtpd + aiosmtplib forwarder (one backend connection per message,
              no filtering): the baseline a Python proxy must beat
  spamgate    spamgate, no filters, backend = smtp-sink (pooled backend connections)
  spamgate+f  spamgate with the example plugin's filters enabled (DATA-phase scanning)
  nopool      spamgate with pool_size = 0 (what the backend pool buys)
  postfix     a private Postfix relaying to smtp-sink, and spamgate in front of that Postfix
              (what putting spamgate in front of a real MTA costs)

It prints msg/s (median of the runs), the proxy's CPU ms per message, its peak RSS, and
ratios against the naive forwarder measured in the same run. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.integration.services.postfix import running_postfix  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")

NAIVE = textwrap.dedent(
    """
    import asyncio, sys, aiosmtplib
    from aiosmtpd.smtp import SMTP
    LISTEN, BACKEND = int(sys.argv[1]), int(sys.argv[2])
    class H:
        async def handle_DATA(self, server, session, envelope):
            try:
                errors, reply = await aiosmtplib.send(envelope.original_content, sender=envelope.mail_from,
                    recipients=envelope.rcpt_tos, hostname="127.0.0.1", port=BACKEND, start_tls=False, timeout=60)
            except aiosmtplib.SMTPException as exc:
                return f"451 4.4.0 {exc}"
            return "250 2.0.0 " + reply.replace("\\r\\n", " ").strip()
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: SMTP(H(), hostname="naive"), "127.0.0.1", LISTEN)
        await srv.serve_forever()
    asyncio.run(main())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_source(port: int, n: int, sessions: int, size: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["/usr/sbin/smtp-source", "-s", str(sessions), "-m", str(n), "-l", str(size), "-f", "sender@src.test",
         "-t", "rcpt@bench.test", "-M", "client.test", f"127.0.0.1:{port}"],
        check=True, capture_output=True,
    )
    return time.perf_counter() - t0


def spamgate_config(work: Path, port: int, sink: int, extra: str) -> Path:
    cfg = work / f"sg-{port}.toml"
    cfg.write_text(
        f'[server]\nhostname = "bench.test"\nstate_dir = "{work}/state"\nlog_level = "warning"\n'
        f'[[listen]]\nhost = "127.0.0.1"\nport = {port}\n[backend]\nhost = "127.0.0.1"\nport = {sink}\n'
        f"{extra}\n[metrics]\nenabled = false\n[limits]\nmax_sessions_per_ip = 1000\n"
    )
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="spamgate-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    stack = contextlib.ExitStack()
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / f"{port}.log", "wb"), env=env)
        procs.append(p)
        wait_port(port)
        return p

    try:
        sink = free_port()
        start(["/usr/sbin/smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{sink}", "1024"], sink)
        (work / "naive.py").write_text(NAIVE)
        plugin = "[filters.example_keyword]\nenabled = true\n[filters.example_crash]\nenabled = false\n"
        targets: list[tuple[str, int, int | None]] = [("sink (no proxy)", sink, None)]
        for label, cmd_extra in (
            ("naive forwarder", None),
            ("spamgate", ""),
            ("spamgate + example filter", plugin),
            ("spamgate, pool_size=0", "pool_size = 0"),
        ):
            port = free_port()
            if cmd_extra is None:
                p = start([sys.executable, str(work / "naive.py"), str(port), str(sink)], port)
            else:
                backend_extra = cmd_extra if cmd_extra.startswith("pool_size") else ""
                filt = "" if backend_extra else cmd_extra
                cfg = spamgate_config(work, port, sink, backend_extra)
                if filt:
                    cfg.write_text(cfg.read_text() + filt)
                p = start([sys.executable, "-m", "spamgate.proxy", "run", "--config", str(cfg)], port)
            targets.append((label, port, p.pid))

        postfix = stack.enter_context(
            running_postfix(f"relay_domains = bench.test\nrelayhost = [127.0.0.1]:{sink}\n", "spamgate-bench-pf-")
        )
        targets.append(("postfix (no proxy)", postfix.port, None))
        port = free_port()
        p = start([sys.executable, "-m", "spamgate.proxy", "run", "--config",
                   str(spamgate_config(work, port, postfix.port, ""))], port)
        targets.append(("spamgate -> postfix", port, p.pid))

        rows = []
        for label, port, pid in targets:
            rates, cpus = [], []
            run_source(port, 200, args.sessions, args.size)  # warm-up
            for _ in range(args.runs):
                c0 = cpu_ticks(pid) if pid else 0
                t = run_source(port, args.messages, args.sessions, args.size)
                c1 = cpu_ticks(pid) if pid else 0
                rates.append(args.messages / t)
                cpus.append(1000 * (c1 - c0) / HZ / args.messages)
            rows.append((label, statistics.median(rates), statistics.median(cpus) if pid else None,
                         peak_rss_mb(pid) if pid else None))
        base = next(r for r in rows if r[0] == "naive forwarder")
        print(f"\nN={args.messages} sessions={args.sessions} size={args.size} runs={args.runs} (median)\n")
        print(f"{'target':28} {'msg/s':>8} {'x naive':>8} {'CPU ms/msg':>11} {'x naive':>8} {'peak RSS MB':>12}")
        for label, rate, cpu, rss in rows:
            cpu_s = f"{cpu:11.3f}" if cpu is not None else f"{'-':>11}"
            cpu_r = f"{cpu / base[2]:8.2f}" if cpu is not None and base[2] else f"{'-':>8}"
            rss_s = f"{rss:12.1f}" if rss is not None else f"{'-':>12}"
            print(f"{label:28} {rate:8.0f} {rate / base[1]:8.2f} {cpu_s} {cpu_r} {rss_s}")
    finally:
        stack.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
