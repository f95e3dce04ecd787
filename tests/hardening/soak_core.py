"""The soak: many concurrent clients through spamgate in front of Postfix with the default
filter set, faults injected as the message count passes milestones, books settled by
Message-ID. Used by tests/bench/soak.py (on demand, full size) and test_soak_short.py (CI).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.hardening.faults import settle
from tests.hardening.live import running_spamgate
from tests.hardening.support import Ledger, ids_in, rss_bytes, run_load_in_thread
from tests.integration.services.dns import start_dns, zone
from tests.integration.services.postfix import Postfix, running_postfix
from tests.integration.services.spamd import Spamd, start_spamd

MB = 1024 * 1024


@dataclass
class SoakResult:
    ledger: Ledger
    delivered: int
    lost: int
    duplicated: int
    wrongly_delivered: int
    peak_rss: int
    rss_slope_mb_per_min: float
    seconds: float
    faults: list[str] = field(default_factory=list)

    def report(self) -> str:
        return (
            f"messages sent {self.ledger.total}, accepted {len(self.ledger.accepted)}, "
            f"refused {len(self.ledger.refused)} (4xx), unanswered {len(self.ledger.unknown)}\n"
            f"delivered {self.delivered}, lost {self.lost}, duplicated {self.duplicated}, "
            f"delivered though refused {self.wrongly_delivered}\n"
            f"peak RSS {self.peak_rss / MB:.1f} MB, RSS slope {self.rss_slope_mb_per_min:+.2f} MB/min, "
            f"{self.seconds:.0f} s, {self.ledger.total / max(self.seconds, 1e-9):.0f} msg/s offered\n"
            f"faults: {', '.join(self.faults) or 'none'}\nreplies: {dict(self.ledger.replies)}"
        )


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, in MB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mt) * (r - mr) for t, r in samples) / var * 60 / MB


def config(postfix: Postfix, dns_port: int, spamd: Spamd | None) -> tuple[str, str]:
    backend = f'host = "127.0.0.1"\nport = {postfix.port}\ntimeout = 10\nconnect_timeout = 2\npool_size = 32\n'
    extra = (
        f'[dns]\nnameservers = ["127.0.0.1"]\nport = {dns_port}\ntimeout = 0.5\nattempts = 1\nreverse_lookup = true\n\n'
        "[limits]\nmax_sessions = 2000\nmax_sessions_per_ip = 100\n\n"
        '[auth]\nlocal_domains = ["example.edu"]\n\n'
        "[filters.local_sender]\nenabled = true\n\n"
        "[filters.headers]\nenabled = true\n\n"
        "[filters.sender_auth]\nenabled = true\ntimeout = 3\n\n"
        "[filters.rbl]\nenabled = true\ntimeout = 2\nskip_private = false\n"
        '[[filters.rbl.lists]]\nzone = "bl.test"\nkind = "ip"\nweight = 1.0\n\n'
    )
    if spamd is not None:
        extra += (f'[filters.spamassassin]\nenabled = true\nhost = "127.0.0.1"\nport = {spamd.port}\n'
                  'timeout = 10\non_error = "continue"\n')
    return backend, extra


@contextlib.contextmanager
def _sampler(pid: int, samples: list[tuple[float, int]]) -> Iterator[None]:
    stop = threading.Event()

    def run() -> None:
        t0 = time.monotonic()
        while not stop.wait(0.5):
            with contextlib.suppress(OSError, RuntimeError):
                samples.append((time.monotonic() - t0, rss_bytes(pid)))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(5)


def run_soak(*, clients: int, messages: int, with_spamd: bool, faults: bool = True,
             log: Callable[[str], None] = lambda _: None) -> SoakResult:
    work = Path(tempfile.mkdtemp(prefix="spamgate-soak-"))
    spamd = start_spamd(work / "spamd", children=4) if with_spamd else None
    nsd = start_dns({"bl.test": zone("bl.test", ["2.0.0.127 A 127.0.0.2"])}, work / "nsd")
    sources = [f"127.0.{4 + i // 250}.{i % 250 + 1}" for i in range(max(clients // 5, 1))]
    try:
        with running_postfix("smtpd_soft_error_limit = 1000\n", prefix="spamgate-postfix-soak-") as pf:
            backend, extra = config(pf, nsd.port, spamd)
            with running_spamgate(backend, extra) as sg:
                assert sg.proc is not None
                pid = sg.proc.pid
                done: list[str] = []
                plan: list[tuple[float, str, Callable[[], None]]] = []
                if faults:
                    plan = [
                        (0.2, "postfix stopped", pf.stop), (0.3, "postfix started", pf.start),
                        (0.4, "SIGHUP", lambda: os.kill(pid, signal.SIGHUP)),
                        (0.5, "NSD stopped", nsd.stop),
                        (0.7, "SIGHUP", lambda: os.kill(pid, signal.SIGHUP)),
                    ]
                    if spamd is not None and spamd.proc is not None:
                        proc = spamd.proc
                        plan.append((0.6, "spamd killed", lambda: proc.send_signal(signal.SIGKILL)))
                ledger = Ledger()
                stop = threading.Event()
                samples: list[tuple[float, int]] = []
                start = time.monotonic()
                with _sampler(pid, samples):
                    thread = run_load_in_thread(sg.port, ledger, clients=clients, stop=stop, sources=sources)
                    while ledger.total < messages and thread.is_alive():
                        while plan and ledger.total >= plan[0][0] * messages:
                            _, name, action = plan.pop(0)
                            action()
                            done.append(f"{name} at {ledger.total}")
                            log(f"fault: {name} at message {ledger.total}")
                        time.sleep(0.05)
                    stop.set()
                    thread.join(300)
                seconds = time.monotonic() - start
                got = settle(ledger, lambda: ids_in(pf.all_messages()), timeout=120)
                assert sg.proc.poll() is None, "spamgate died"
        lost = sum(1 for mid in ledger.accepted if got[mid] == 0)
        dup = sum(1 for mid in ledger.accepted | ledger.unknown if got[mid] > 1)
        wrong = sum(1 for mid in ledger.refused if got[mid])
        return SoakResult(ledger, sum(1 for mid in ledger.accepted if got[mid]), lost, dup, wrong,
                          max((r for _, r in samples), default=0), slope(samples), seconds, done)
    finally:
        nsd.stop()
        if spamd is not None:
            spamd.close()
