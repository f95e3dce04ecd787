"""A nameserver that isn't running fails at once: no waiting out timeout x attempts.

Real sockets on loopback: a UDP port nobody listens on answers with ICMP port unreachable,
which only a connected socket gets to see.
"""

from __future__ import annotations

import socket

from spamgate.filters.sdk.api import DnsSettings
from spamgate.filters.services.dns import CachingResolver, probe
from spamgate.proxy.rdns import ReverseResolver


def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_nameserver_is_an_error_not_a_timeout() -> None:
    # timeout x attempts = 60 s: if the refusal were not seen, this answer would be "timeout".
    settings = DnsSettings(nameservers=("127.0.0.1",), port=_dead_port(), timeout=30.0, attempts=2, cache_size=10)
    r = CachingResolver(settings)
    answer = await r.query("1.0.0.127.in-addr.arpa", "PTR", max_wait=20)
    assert answer.status == "error"
    assert answer.detail.startswith("unreachable:") and "refused" in answer.detail.lower()
    assert r.outage.down


async def test_reverse_lookup_with_no_resolver_is_unknown_at_once() -> None:
    settings = DnsSettings(nameservers=("127.0.0.1",), port=_dead_port(), timeout=30.0, attempts=2, cache_size=10)
    names = await ReverseResolver(CachingResolver(settings), budget=20).lookup_bounded("127.0.0.1")
    # Unknown because the lookup failed (Postfix's [TEMPUNAVAIL]), not because the budget ran out:
    # the budget is 20 s and the test would have waited for it.
    assert names.temporary_failure and names.reverse is None


async def test_probe_says_why_no_resolver_answers() -> None:
    port = _dead_port()
    problem = await probe(DnsSettings(nameservers=("127.0.0.1",), port=port), wait=5)
    assert problem is not None and f"127.0.0.1:{port}" in problem
