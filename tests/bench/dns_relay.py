#!/usr/bin/env python3
"""A UDP relay that holds every DNS query DELAY_MS before passing it on: a round trip to fake.

    python tests/bench/dns_relay.py LISTEN_PORT UPSTREAM_PORT DELAY_MS

Both ports on 127.0.0.1. Answers go straight back to whoever asked (matched by query id), so
the relay adds DELAY_MS to each round trip, as a local resolver asking a DNS list's servers on
a cache miss would. A separate process (``start_relay``), so its work is not the client's CPU.
No project imports: it starts in a blink.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

__all__ = ["start_relay"]


class _Relay(asyncio.DatagramProtocol):
    """Forward each query upstream after ``delay`` seconds; answers go back by query id."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.waiting: dict[bytes, list[tuple[str, int]]] = {}
        self.down: asyncio.DatagramTransport | None = None
        self.up: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.down = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.waiting.setdefault(data[:2], []).append(addr)
        assert self.up is not None
        asyncio.get_running_loop().call_later(self.delay, self.up.sendto, data)

    def answer(self, data: bytes) -> None:
        addrs = self.waiting.get(data[:2])
        if addrs and self.down is not None:
            self.down.sendto(data, addrs.pop(0))
            if not addrs:
                del self.waiting[data[:2]]


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.answer(data)


async def relay(listen: int, upstream: int, delay_ms: float) -> None:
    loop = asyncio.get_running_loop()
    proto = _Relay(delay_ms / 1000)
    await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", listen))
    up, _ = await loop.create_datagram_endpoint(lambda: _Upstream(proto), remote_addr=("127.0.0.1", upstream))
    proto.up = up
    await asyncio.Event().wait()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_relay(upstream: int, delay_ms: float, probe: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start the relay in front of 127.0.0.1:``upstream``; ready once ``probe`` (a name) is answered."""
    import dns.exception
    import dns.message
    import dns.query

    port = _free_udp_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(port), str(upstream), str(delay_ms)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError, dns.exception.DNSException):
            dns.query.udp(dns.message.make_query(probe, "SOA"), "127.0.0.1", port=port, timeout=0.2)
            return proc, port
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError("the DNS relay did not start")


if __name__ == "__main__":
    listen, upstream, delay = sys.argv[1:4]
    asyncio.run(relay(int(listen), int(upstream), float(delay)))
