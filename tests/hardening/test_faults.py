"""Faults under load, with exactly-once accounting by Message-ID.

For each fault: the client never gets 250 for mail that was not delivered, every 250'd
message is delivered exactly once, refusals are 4xx, and delivery resumes after recovery.
The backend is a real Postfix (counted in its Maildirs) or a counting sink (tests/hardening/sink.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hardening.faults import assert_exactly_once, load_with_faults, settle
from tests.hardening.live import running_spamgate
from tests.hardening.sink import CountingSink
from tests.hardening.support import ids_in
from tests.integration.services.dns import silent_udp_port, start_dns, zone
from tests.integration.services.postfix import running_postfix
from tests.integration.services.spamd import start_spamd

pytestmark = pytest.mark.integration

SINK_BACKEND = 'host = "127.0.0.1"\nport = {port}\ntimeout = 2\nconnect_timeout = 2\n'


@pytest.fixture
def sink() -> Iterator[CountingSink]:
    s = CountingSink()
    yield s
    s.close()


def test_postfix_stopped_and_restarted_under_load() -> None:
    with running_postfix(prefix="spamgate-postfix-fault-") as pf, \
            running_spamgate(f'host = "127.0.0.1"\nport = {pf.port}\ntimeout = 10\nconnect_timeout = 2\n') as sg:
        ledger = load_with_faults(sg.port, clients=6, seconds=7, schedule=[(2.0, pf.stop), (4.0, pf.start)])
        got = settle(ledger, lambda: ids_in(pf.all_messages()))
        assert_exactly_once(ledger, got, min_accepted=20)
        assert any(why.startswith("451") for why in ledger.refused.values()), ledger.summary()


def test_slow_backend(sink: CountingSink) -> None:
    """Slow but within the backend timeout: accepted. Slower than it (at RCPT): 4xx, not delivered."""
    sink.fault = lambda n, stage: ("delay:0.5" if stage == "data" and n % 3 == 0
                                   else "delay:3" if stage == "rcpt" and n % 7 == 0 else None)
    with running_spamgate(SINK_BACKEND.format(port=sink.port)) as sg:
        ledger = load_with_faults(sg.port, clients=8, seconds=4)
        assert_exactly_once(ledger, settle(ledger, sink.counts), min_accepted=20)
        assert any(why.startswith("451 4.4.2") for why in ledger.refused.values()), ledger.summary()


def test_backend_answers_421_mid_session(sink: CountingSink) -> None:
    sink.fault = lambda n, stage: "421" if ((stage == "mail" and n % 5 == 0) or (stage == "rcpt" and n % 7 == 0)
                                            or (stage == "data" and n % 11 == 0)) else None
    with running_spamgate(SINK_BACKEND.format(port=sink.port)) as sg:
        ledger = load_with_faults(sg.port, clients=6, seconds=4)
        assert_exactly_once(ledger, settle(ledger, sink.counts), min_accepted=20)
        assert sum(why.startswith("4") for why in ledger.refused.values()) >= 3, ledger.summary()


def test_spamd_killed_under_load(sink: CountingSink, tmp_path: Path) -> None:
    """Fail-closed (``on_error = "tempfail"``): once spamd is gone every message gets 451, none a 250.
    (Fail-open delivery without spamd: tests/integration/test_spamassassin.py.)"""
    on_error = "tempfail"
    spamd = start_spamd(tmp_path / "spamd", children=2)
    try:
        extra = (f"[filters.spamassassin]\nenabled = true\nhost = \"127.0.0.1\"\nport = {spamd.port}\n"
                 f"timeout = 5\non_error = \"{on_error}\"\n")
        with running_spamgate(SINK_BACKEND.format(port=sink.port), extra) as sg:
            assert spamd.proc is not None
            proc = spamd.proc
            ledger = load_with_faults(sg.port, clients=4, seconds=6, schedule=[(2.0, lambda: proc.send_signal(9))])
            assert_exactly_once(ledger, settle(ledger, sink.counts), min_accepted=1)
            assert any(why.startswith("451") for why in ledger.refused.values()), ledger.summary()
    finally:
        spamd.close()


def test_dns_stopped_and_dropping_packets(sink: CountingSink, tmp_path: Path) -> None:
    """Reverse lookups and an RBL against NSD, which is stopped mid-load; a second list's server
    drops every packet. Lookups fail or time out; mail keeps flowing, exactly once."""
    nsd = start_dns({"bl.test": zone("bl.test", ["2.0.0.127 A 127.0.0.2"])}, tmp_path / "nsd")
    try:
        with silent_udp_port() as silent:
            extra = (
                f'[dns]\nnameservers = ["127.0.0.1"]\nport = {nsd.port}\ntimeout = 0.5\nattempts = 1\n'
                "reverse_lookup = true\n\n"
                "[filters.rbl]\nenabled = true\ntimeout = 3\nskip_private = false\n"
                '[[filters.rbl.lists]]\nzone = "bl.test"\nkind = "ip"\nweight = 1.0\n'
                '[[filters.rbl.lists]]\nzone = "dropped.test"\nkind = "ip"\nweight = 1.0\n'
                f'nameservers = ["127.0.0.1"]\nport = {silent}\ntimeout = 0.5\n'
            )
            with running_spamgate(SINK_BACKEND.format(port=sink.port), extra) as sg:
                ledger = load_with_faults(sg.port, clients=6, seconds=4, schedule=[(1.5, nsd.stop)])
                assert_exactly_once(ledger, settle(ledger, sink.counts), min_accepted=20)
                assert not ledger.refused, ledger.summary()
    finally:
        nsd.stop()


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A real 160 KiB filesystem (tmpfs): room for a couple of dozen quarantined messages."""
    d = Path(tempfile.mkdtemp(prefix="spamgate-tinyfs-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here (needs root): {r.stderr}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)
        d.rmdir()


def _quarantined(qdir: Path) -> Counter[str]:
    return ids_in(p.read_bytes() for p in qdir.glob("*.eml") if not p.name.startswith("."))


def test_quarantine_disk_full(sink: CountingSink, tiny_disk: Path) -> None:
    qdir = tiny_disk / "q"
    extra = f'[actions]\nquarantine = 0.0\nadd_header = 6.0\n\n[pipeline]\nquarantine_dir = "{qdir}"\n'
    with running_spamgate(SINK_BACKEND.format(port=sink.port), extra) as sg:
        ledger = load_with_faults(sg.port, clients=4, seconds=4)
        # The quarantine's search index (SQLite) shares the tiny disk: only a few messages fit.
        assert_exactly_once(ledger, _quarantined(qdir), min_accepted=2)
        full = [why for why in ledger.refused.values() if why.startswith("451 4.3.1")]
        assert full, f"the disk never filled: {ledger.summary()}"
        assert not sink.counts(), "quarantined mail must not be relayed"
        # Failed writes leave nothing behind that keeps the disk full.
        assert not [p.name for p in qdir.iterdir() if p.name.startswith(".")]
        # The operator makes room: quarantining resumes.
        for p in qdir.iterdir():
            p.unlink()
        after = load_with_faults(sg.port, clients=1, seconds=1)
        assert after.accepted, after.summary()
        assert_exactly_once(after, _quarantined(qdir))


def test_sighup_and_sigterm_during_load(sink: CountingSink) -> None:
    with running_spamgate(SINK_BACKEND.format(port=sink.port)) as sg:
        assert sg.proc is not None
        pid = sg.proc.pid
        hup = [(t, lambda: os.kill(pid, signal.SIGHUP)) for t in (1.0, 1.5, 2.0, 2.5)]
        ledger = load_with_faults(sg.port, clients=8, seconds=6,
                                  schedule=[*hup, (3.5, lambda: os.kill(pid, signal.SIGTERM))])
        assert sg.proc.wait(30) == 0
        assert_exactly_once(ledger, settle(ledger, sink.counts), min_accepted=20)
        assert sg.log().count("reloaded config") == 4
        # In-flight transactions were finished, not cut: every end of DATA got its answer.
        assert not ledger.unknown, ledger.summary()
