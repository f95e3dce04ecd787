"""A real authoritative DNS server (NSD) on a loopback port, for tests that resolve.

    server = start_dns({"zen.test": zone("zen.test", ["2.0.0.127 A 127.0.0.2"])}, tmp_path)
    ...  # point [dns] nameservers = [server.host], port = server.port at it
    server.stop()

NSD answers every query at once (``rrl-ratelimit: 0``: its default rate limit would
drop answers in bursts), NXDOMAIN with the zone's SOA, so negative caching is real.
``silent_udp_port()`` gives a port where nothing ever answers, for timeout tests.
``start_dns(..., stats=True)`` opens NSD's control socket so ``server.queries()`` reads how
many queries NSD itself answered (a count from the server side, for benchmarks).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.services.process import stop_process

__all__ = ["NSD", "DnsServer", "dns_factory", "silent_udp_port", "start_dns", "zone"]

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
NSD_CONTROL = shutil.which("nsd-control") or "/usr/sbin/nsd-control"
HOST = "127.0.0.1"


@dataclass
class DnsServer:
    host: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(repr=False, default=None)

    def log(self) -> str:
        path = self.workdir / "nsd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def queries(self) -> int:
        """Queries NSD has answered since it started (``nsd-control stats_noreset``; needs ``stats=True``)."""
        res = subprocess.run([NSD_CONTROL, "-c", str(self.workdir / "nsd.conf"), "stats_noreset"],
                             capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
        for line in res.stdout.splitlines():
            if line.startswith("num.queries="):
                return int(line.split("=", 1)[1])
        raise RuntimeError(f"nsd-control printed no num.queries: {res.stdout[:200]!r}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        stop_process(proc, 5)


def zone(origin: str, records: Sequence[str], ttl: int = 60, negative_ttl: int = 60) -> str:
    """Zone file text for ``origin`` with SOA (minimum = ``negative_ttl``), NS and ``records``.

    Records are written relative to the origin, e.g. ``"2.0.0.127 A 127.0.0.2"``.
    """
    head = [
        f"$ORIGIN {origin.rstrip('.')}.",
        f"$TTL {ttl}",
        f"@ IN SOA ns.{origin}. hostmaster.{origin}. ( 1 3600 600 86400 {negative_ttl} )",
        f"@ IN NS ns.{origin}.",
        "ns IN A 127.0.0.1",
    ]
    return "\n".join([*head, *records]) + "\n"


def _free_port() -> int:
    """A port free for both UDP and TCP right now (NSD binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port for the DNS server")


def _config(workdir: Path, port: int, names: Sequence[str], stats: bool) -> str:
    lines = [
        "server:",
        f"    ip-address: {HOST}@{port}",
        "    do-ip6: no",
        '    username: ""',
        '    chroot: ""',
        f'    zonesdir: "{workdir}"',
        '    database: ""',
        f'    pidfile: "{workdir}/nsd.pid"',
        f'    xfrdfile: "{workdir}/xfrd.state"',
        f'    zonelistfile: "{workdir}/zone.list"',
        f'    logfile: "{workdir}/nsd.log"',
        "    server-count: 1",
        "    verbosity: 1",
        "    rrl-ratelimit: 0",
        "remote-control:",
        # A unix socket in the workdir: no keys or certificates, and no TCP port to pick.
        *(
            ["    control-enable: yes", f"    control-interface: {workdir}/nsd.ctl"]
            if stats
            else ["    control-enable: no"]
        ),
    ]
    for name in names:
        lines += ["zone:", f'    name: "{name}"', f'    zonefile: "{name}.zone"']
    return "\n".join(lines) + "\n"


def _answers(port: int, name: str) -> bool:
    query = dns.message.make_query(name + ".", "SOA")
    try:
        reply = dns.query.udp(query, HOST, port=port, timeout=0.2)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def start_dns(zones: dict[str, str], workdir: Path, ready_timeout: float = 15.0, *, stats: bool = False) -> DnsServer:
    """Start NSD serving ``zones`` (name -> zone file text) on a free loopback port."""
    if not zones:
        raise ValueError("start_dns needs at least one zone")
    workdir.mkdir(parents=True, exist_ok=True)
    names = [n.rstrip(".").lower() for n in zones]
    for name, text in zip(names, zones.values(), strict=True):
        (workdir / f"{name}.zone").write_text(text)
    last_log = ""
    for _ in range(3):  # the free port may be taken between our probe and NSD's bind
        port = _free_port()
        conf = workdir / "nsd.conf"
        conf.write_text(_config(workdir, port, names, stats))
        (workdir / "nsd.log").write_text("")
        proc = subprocess.Popen([NSD, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = DnsServer(HOST, port, workdir, proc)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if all(_answers(port, n) for n in names):
                return server
            time.sleep(0.05)
        last_log = server.log()
        server.stop()
    raise RuntimeError(f"NSD did not start serving {names}; its log:\n{last_log}")


@contextlib.contextmanager
def silent_udp_port() -> Iterator[int]:
    """A bound UDP port that never answers: queries to it can only time out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def dns_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[dict[str, str]], DnsServer]]:
    """``server = dns_factory({"zen.test": zone(...)})``; every server is stopped at test end."""
    servers: list[DnsServer] = []

    def make(zones: dict[str, str]) -> DnsServer:
        server = start_dns(zones, tmp_path_factory.mktemp("nsd"))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
