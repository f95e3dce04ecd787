"""The rbl filter through real SMTP sessions: spamgate in front of Postfix, NSD serving the lists.

The client binds to a loopback source address to pick its fate (see rbl_zones.py):
127.0.0.2 is listed, 127.0.0.3 is not, 127.0.0.5 draws a Spamhaus error code and
127.0.0.6 is listed but also on the DNSWL.
"""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import SpamgateFactory
from tests.integration.rbl_zones import TXT_127_0_0_2, ZONES
from tests.integration.services.dns import DnsServer, silent_udp_port, start_dns
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import send

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = start_dns(ZONES, tmp_path_factory.mktemp("nsd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    with silent_udp_port() as port:
        yield port


def config(nsd: DnsServer, silent_port: int, rbl_options: str = "") -> str:
    return f"""
[dns]
nameservers = ["{nsd.host}"]
port = {nsd.port}
timeout = 2.0
attempts = 1

[filters.rbl]
enabled = true
skip_private = false
{rbl_options}

[[filters.rbl.lists]]
zone = "zen.test"
weight = 1.0

[[filters.rbl.lists]]
zone = "dnswl.test"
weight = -5.0
symbol = "RCVD_IN_DNSWL"

[[filters.rbl.lists]]
zone = "dbl.test"
kind = "domain"
weight = 2.0

[[filters.rbl.lists]]
zone = "uribl.test"
kind = "uri"
weight = 3.0

[[filters.rbl.lists]]
zone = "slow.test"
weight = 1.0
timeout = 0.3
nameservers = ["127.0.0.1"]
port = {silent_port}
"""


def message(mid: str, body: str = "Hello there.") -> bytes:
    return (
        f"From: Sender <sender@example.org>\r\nTo: alice@example.edu\r\nSubject: rbl {mid}\r\n"
        f"Message-ID: <{mid}@example.org>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


def spam_status(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return " ".join(str(msg["X-Spam-Status"]).split())


def deliver(postfix: Postfix, port: int, source: str, body: str = "Hello there.", helo: str = "client.test",
            mail_from: str = "sender@example.org") -> str:
    """Send one message, insist it was accepted, and return the X-Spam-Status Postfix delivered."""
    mid = uuid.uuid4().hex
    res = send(port, mail_from, ["alice@example.edu"], message(mid, body), helo=helo, source_address=source)
    assert res.rcpt == [(250, "2.1.5 Ok")], res
    assert res.delivered, res
    return spam_status(postfix.wait_for(lambda m: mid.encode() in m))


def test_listed_client_is_refused_at_rcpt_with_postfix_wording(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int
) -> None:
    sg = spamgate(config(nsd, silent_port, "reject_score = 1.0"))
    res = send(sg.port, "sender@example.org", ["alice@example.edu", "postmaster@example.edu"],
               message(uuid.uuid4().hex), source_address="127.0.0.2")
    assert res.mail[0] == 250
    assert res.rcpt[0] == (
        554, f"5.7.1 Service unavailable; Client host [127.0.0.2] blocked using zen.test; {TXT_127_0_0_2}"
    )
    assert res.rcpt[1] == (250, "2.1.5 Ok")  # postmaster stays reachable
    assert "filter=rbl reject" in sg.log()
    status = deliver(postfix, sg.port, "127.0.0.3")  # the clean neighbour gets through
    assert "RBL_ZEN_TEST" not in status and "RBL_SLOW_TEST_TIMEOUT(0.0)" in status


def test_without_reject_score_listing_only_scores(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int
) -> None:
    sg = spamgate(config(nsd, silent_port))
    status = deliver(postfix, sg.port, "127.0.0.2")
    assert status.startswith("No, score=1.0 ")
    assert "RBL_ZEN_TEST(1.0)" in status


def test_dnswl_allowlists_a_listed_client(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int
) -> None:
    sg = spamgate(config(nsd, silent_port, "reject_score = 1.0"))
    status = deliver(postfix, sg.port, "127.0.0.6")
    assert "RBL_ZEN_TEST(1.0)" in status and "RCVD_IN_DNSWL(-5.0)" in status
    assert "score=-4.0" in status


def test_spamhaus_error_code_is_unknown_not_listed(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int
) -> None:
    sg = spamgate(config(nsd, silent_port, "reject_score = 0.5"))
    status = deliver(postfix, sg.port, "127.0.0.5")
    assert "RBL_ZEN_TEST_ERROR(0.0)" in status
    assert "score=0.0" in status
    assert "127.255.255.254" in sg.log()


def test_list_that_never_answers_is_bounded_by_its_timeout(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int
) -> None:
    # The filter-wide timeout is far longer than the list's: the per-list bound must act.
    sg = spamgate(config(nsd, silent_port, "timeout = 30\nreject_score = 1.0"))
    status = deliver(postfix, sg.port, "127.0.0.3")
    assert "RBL_SLOW_TEST_TIMEOUT(0.0)" in status
    assert "RBL_ERROR" not in status  # the list timed out, not the whole filter
    assert "list=slow.test ip=127.0.0.3 timeout: no answer within 0.3s" in sg.log()


def test_rhsbl_on_helo_and_sender_domain(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int
) -> None:
    sg = spamgate(config(nsd, silent_port, "reject_score = 2.0"))
    helo = send(sg.port, "sender@example.org", ["alice@example.edu"], message(uuid.uuid4().hex),
                helo="spam-helo.example", source_address="127.0.0.3")
    assert helo.rcpt == [(554, "5.7.1 Service unavailable; Helo command [spam-helo.example] blocked using dbl.test")]
    sender = send(sg.port, "someone@spammer.example", ["alice@example.edu"], message(uuid.uuid4().hex),
                  source_address="127.0.0.3")
    assert sender.rcpt == [(
        554,
        "5.7.1 Service unavailable; Sender address [spammer.example] blocked using dbl.test; "
        "spammer.example is a spam domain",
    )]
    sg2 = spamgate(config(nsd, silent_port))
    assert "RHSBL_DBL_TEST(2.0)" in deliver(postfix, sg2.port, "127.0.0.3", helo="spam-helo.example")


def test_uribl_on_a_body_url(postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int) -> None:
    sg = spamgate(config(nsd, silent_port, "reject_score = 1.0"))
    status = deliver(postfix, sg.port, "127.0.0.3", body="Cheap pills at http://www.spam-url.example/buy now")
    assert "URIBL_URIBL_TEST(3.0)" in status
    assert "score=3.0" in status


def test_lookup_metrics_are_exported(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int
) -> None:
    import urllib.request

    sg = spamgate(config(nsd, silent_port))
    deliver(postfix, sg.port, "127.0.0.2")
    deliver(postfix, sg.port, "127.0.0.2")
    with urllib.request.urlopen(f"http://127.0.0.1:{sg.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'spamgate_dnsbl_lookups_total{list="zen.test",result="listed"} 2.0' in text
    assert 'spamgate_dnsbl_lookups_total{list="slow.test",result="timeout"} 2.0' in text
    # the second session's zen.test and dnswl.test answers came from the cache
    hits = [line for line in text.splitlines() if line.startswith("spamgate_dns_cache_hits_total ")]
    assert hits and float(hits[0].split()[1]) >= 2
    assert 'spamgate_dns_lookup_duration_seconds_count{rdtype="A"}' in text



def test_listed_ipv6_client_is_refused_over_smtp(
    postfix: Postfix, spamgate: SpamgateFactory, nsd: DnsServer, silent_port: int
) -> None:
    listen = ('[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
              '[[listen]]\nname = "mx6"\nhost = "::1"\nport = @PORT2@\nrole = "mx"\n')
    sg = spamgate(config(nsd, silent_port, "reject_score = 1.0"), listen_toml=listen)
    res = send(sg.port2, "sender@example.org", ["alice@example.edu"], message(uuid.uuid4().hex),
               host="::1", source_address="::1")
    assert res.rcpt[0][0] == 554
    assert res.rcpt[0][1].startswith("5.7.1 Service unavailable; Client host [::1] blocked using zen.test")
