#!/usr/bin/env python3
"""What a DNS lookup that misses the cache costs spamgate's event loop (run on demand, not in CI).

    .venv/bin/python tests/bench/bench_dns_query.py [--lookups 2000] [--runs 3] [--markdown FILE]

A nameserver process on a loopback UDP port (its own process: its CPU is not counted) answers
every A query at once: 127.0.0.2 for names starting with ``2.``, NXDOMAIN with an SOA for the
rest, as a DNS list does. The client process looks up distinct names, so each is a cache miss,
one at a time and five at a time, through:

  baseline   dnspython's asyncio resolver as spamgate built it until this release
             (``make_resolver``: connected sockets, no cache), one ``resolve()`` per lookup
  spamgate   ``CachingResolver.query`` (filters/services/dns.py) and its own query path
             (dns_udp.py), as for this loopback nameserver: one socket for up to 100 queries
  spamgate, a socket per query
             the same with a fresh socket for every query, as a nameserver on another machine
             gets (RFC 5452's random source port per query)

CPU is the client's user + system time (``time.process_time``) per lookup; the table gives
the median of the runs and the ratio against the baseline of the same run. Only 127.0.0.1
is used: no root and no namespace needed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import dns.message  # noqa: E402
import dns.rcode  # noqa: E402
import dns.resolver  # noqa: E402
import dns.rrset  # noqa: E402

from spamgate.filters.sdk.dns import DnsSettings  # noqa: E402
from spamgate.filters.services import dns_udp  # noqa: E402
from spamgate.filters.services.dns import CachingResolver, make_resolver  # noqa: E402

SOA = "ns.bl.test. hostmaster.bl.test. 1 3600 600 86400 60"


def nameserver(sock: socket.socket) -> None:
    while True:
        data, addr = sock.recvfrom(4096)
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        name = query.question[0].name
        if name.labels[0] == b"2":
            reply.answer.append(dns.rrset.from_text(name, 300, "IN", "A", "127.0.0.2"))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(dns.rrset.from_text("bl.test.", 60, "IN", "SOA", SOA))
        sock.sendto(reply.to_wire(), addr)


async def measure(lookup: Callable[[str], Awaitable[object]], names: list[str],
                  concurrency: int) -> tuple[float, float]:
    """CPU ms per lookup and lookups per second."""
    todo = iter(names)

    async def worker() -> None:
        for name in todo:
            await lookup(name)

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return 1000 * (time.process_time() - c0) / len(names), len(names) / (time.perf_counter() - t0)


async def one_run(port: int, lookups: int, run: int) -> dict[tuple[str, int], tuple[float, float]]:
    settings = DnsSettings(nameservers=("127.0.0.1",), port=port, cache_size=lookups * 4)
    old = make_resolver(settings)
    new = CachingResolver(settings)

    async def baseline(name: str) -> object:
        try:
            return await old.resolve(name, "A", search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None

    async def spamgate(name: str) -> object:
        return await new.query(name, "A")

    out = {}
    for concurrency in (1, 5):
        for label, fn in (("baseline", baseline), ("spamgate", spamgate), ("per-query", spamgate)):
            names = [f"{i % 3}.{i}.{run}.{concurrency}.{label}.bl.test" for i in range(lookups)]
            dns_udp.LOOPBACK_QUERIES = 1 if label == "per-query" else 100
            try:
                out[(label, concurrency)] = await measure(fn, names, concurrency)
            finally:
                dns_udp.LOOPBACK_QUERIES = 100
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lookups", type=int, default=2000, help="distinct names per series (default 2000)")
    ap.add_argument("--runs", type=int, default=3, help="runs; the median is reported (default 3)")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("fork").Process(target=nameserver, args=(sock,), daemon=True)
    server.start()
    sock.close()
    try:
        runs = [asyncio.run(one_run(port, args.lookups, i)) for i in range(args.runs)]
    finally:
        server.kill()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"DNS lookups that miss the cache, {args.lookups} distinct names per series (a third answered, two thirds "
             f"NXDOMAIN), a nameserver process on 127.0.0.1; median of {args.runs} runs; {when}", "",
             "| lookups in flight | path | CPU ms per lookup | lookups/s | CPU vs baseline |",
             "| ---: | --- | ---: | ---: | ---: |"]  # fmt: skip
    for concurrency in (1, 5):
        base = statistics.median(r[("baseline", concurrency)][0] for r in runs)
        for label, shown in (("baseline", "dnspython's resolver (baseline)"), ("spamgate", "spamgate"),
                             ("per-query", "spamgate, a socket per query")):
            cpu = statistics.median(r[(label, concurrency)][0] for r in runs)
            rate = statistics.median(r[(label, concurrency)][1] for r in runs)
            lines.append(f"| {concurrency} | {shown} | {cpu:.3f} | {rate:,.0f} | {cpu / base:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
