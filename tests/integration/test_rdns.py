"""The client's forward-confirmed reverse name reaches Postfix (XCLIENT NAME), our Received and filters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from spamgate.filters.sdk.api import DnsSettings
from spamgate.filters.services.dns import CachingResolver
from spamgate.proxy.rdns import ReverseResolver
from tests.integration.conftest import SpamgateFactory
from tests.integration.services.dns import DnsServer, start_dns, zone
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import send

ZONES = {
    "0.0.127.in-addr.arpa": zone("0.0.127.in-addr.arpa", [
        "9 PTR client9.example.org.",      # confirmed: client9 resolves back to 127.0.0.9
        "10 PTR liar.example.org.",        # not confirmed: liar resolves elsewhere
    ]),
    "example.org": zone("example.org", ["client9 A 127.0.0.9", "liar A 192.0.2.66"]),
}


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = start_dns(ZONES, tmp_path_factory.mktemp("nsd-rdns"))
    yield server
    server.stop()


def test_lookup_confirms_or_not(nsd: DnsServer) -> None:
    settings = DnsSettings(nameservers=(nsd.host,), port=nsd.port, timeout=2.0, attempts=1)
    r = ReverseResolver(CachingResolver(settings), budget=5.0)

    async def both() -> tuple[object, object, object]:
        return (await r.lookup("127.0.0.9"), await r.lookup("127.0.0.10"), await r.lookup("127.0.0.11"))

    ok, liar, none = asyncio.run(both())
    assert (ok.reverse, ok.verified, ok.temporary_failure) == ("client9.example.org", "client9.example.org", False)  # type: ignore[attr-defined]
    # An IPv4 client as a dual-stack balancer's PROXY header may name it: its names are the IPv4 ones.
    assert asyncio.run(r.lookup("::ffff:127.0.0.9")) == ok
    assert (liar.reverse, liar.verified) == ("liar.example.org", None)  # type: ignore[attr-defined]
    assert (none.reverse, none.verified, none.temporary_failure) == (None, None, False)  # type: ignore[attr-defined]


def test_names_reach_postfix_and_our_received_header(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer
) -> None:
    sg = spamgate(f'[dns]\nnameservers = ["{nsd.host}"]\nport = {nsd.port}\ntimeout = 2.0\nattempts = 1\n')
    for source, shown in (("127.0.0.9", b"client9.example.org [127.0.0.9]"), ("127.0.0.10", b"unknown [127.0.0.10]")):
        mid = uuid.uuid4().hex
        msg = (f"From: <a@example.org>\r\nTo: <alice@example.edu>\r\nSubject: {mid}\r\n"
               f"Message-ID: <{mid}@example.org>\r\n\r\nhi\r\n").encode()
        res = send(sg.port, "a@example.org", ["alice@example.edu"], msg, helo="helo.example.org",
                   source_address=source)
        assert res.delivered, res
        got = postfix.wait_for(lambda m, mid=mid: mid.encode() in m)
        received = [h for h in got.split(b"\nReceived: ")[1:3]]
        # Postfix's line (on top) and ours both name the client the same way.
        assert all(h.startswith(b"from helo.example.org (" + shown + b")") for h in received), received
    assert "client=client9.example.org[127.0.0.9]" in postfix.maillog()
