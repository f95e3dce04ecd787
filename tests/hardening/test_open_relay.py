"""Open relay: spamgate on an ``mx`` listener in front of Postfix relays for nobody.

spamgate itself has no relay policy: it forwards every RCPT live and Postfix decides, for
the real client, because spamgate identifies that client with XCLIENT. These tests prove
it with nmap's own scanner and with hand-written relay tricks, and pin what happens when
the backend does not accept XCLIENT from spamgate.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.hardening.live import running_spamgate
from tests.integration.conftest import Spamgate
from tests.integration.services.postfix import Postfix, running_postfix
from tests.integration.smtp_client import RawClient

pytestmark = pytest.mark.integration

# Postfix tarpits a client after smtpd_soft_error_limit errors (a second per error per reply):
# nmap's 16 relay attempts would take minutes. The tarpit is Postfix's business, not tested here.
FAST_ERRORS = "smtpd_soft_error_limit = 1000\n"


@pytest.fixture(scope="module")
def relay_gate() -> Iterator[tuple[Postfix, Spamgate]]:
    with running_postfix(FAST_ERRORS, prefix="spamgate-postfix-relay-") as pf, \
            running_spamgate(f'host = "127.0.0.1"\nport = {pf.port}\n') as sg:
        yield pf, sg


def test_nmap_smtp_open_relay_says_not_an_open_relay(relay_gate: tuple[Postfix, Spamgate]) -> None:
    pf, sg = relay_gate
    r = subprocess.run(
        ["nmap", "-n", "-Pn", "-sV", "--version-intensity", "0", "-p", str(sg.port), "--script", "smtp-open-relay",
         "--script-args", "smtp-open-relay.domain=spamgate.test", "127.0.0.1"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert "smtp-open-relay: Server doesn't seem to be an open relay, all tests failed" in r.stdout, r.stdout
    # nmap really talked to Postfix through spamgate, and Postfix refused every attempt.
    assert pf.maillog().count("Relay access denied") >= 10, pf.maillog()[-3000:]


@pytest.mark.parametrize(
    "rcpt",
    ["victim@elsewhere.example", "victim%elsewhere.example@example.edu", "elsewhere.example!victim@example.edu",
     '"victim@elsewhere.example"@example.edu', "@example.edu:victim@elsewhere.example",
     "victim@elsewhere.example@[127.0.0.1]", "victim@[192.0.2.1]"],
)
def test_external_to_external_refused_on_mx(relay_gate: tuple[Postfix, Spamgate], rcpt: str) -> None:
    _, sg = relay_gate
    c = RawClient(sg.port, source_address="127.0.0.9", timeout=20)
    try:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO relay.example")[0] == 250
        assert c.cmd("MAIL FROM:<spammer@outside.example>")[0] == 250
        code, text = c.cmd(f"RCPT TO:<{rcpt}>")
        assert code >= 500, (rcpt, code, text)
        # And the transaction cannot go on without a recipient.
        assert c.cmd("DATA")[0] in (503, 554)
    finally:
        c.close()


def test_backend_without_xclient_is_not_an_open_relay() -> None:
    """Found by this suite: a backend not given XCLIENT sees spamgate's loopback address for every
    client and (Debian's default mynetworks) relays for anyone. spamgate refuses relaying itself on
    mx listeners when it knows its local domains, like Postfix's reject_unauth_destination."""
    stock = "smtpd_authorized_xclient_hosts =\nsmtpd_authorized_xforward_hosts =\nmynetworks = 127.0.0.1/32\n"
    with running_postfix(stock, prefix="spamgate-postfix-noxclient-") as pf, \
            running_spamgate(f'host = "127.0.0.1"\nport = {pf.port}\n',
                             '[auth]\nlocal_domains = ["example.edu"]\n') as sg:
        direct = RawClient(pf.port, source_address="127.0.0.9", timeout=20)
        direct.reply()
        direct.cmd("EHLO relay.example")
        direct.cmd("MAIL FROM:<spammer@outside.example>")
        # The same client talking to Postfix directly is refused: Postfix itself is not open.
        assert direct.cmd("RCPT TO:<victim@elsewhere.example>")[0] == 554
        direct.close()
        c = RawClient(sg.port, source_address="127.0.0.9", timeout=20)
        try:
            c.reply()
            c.cmd("EHLO relay.example")
            assert c.cmd("MAIL FROM:<spammer@outside.example>")[0] == 250
            code, text = c.cmd("RCPT TO:<victim@elsewhere.example>")
            assert (code, text) == (554, "5.7.1 <victim@elsewhere.example>: Relay access denied"), (code, text)
            assert c.cmd("RCPT TO:<alice@example.edu>")[0] == 250  # inbound mail still flows
        finally:
            c.close()
