"""Crashes the property tests and the fuzzer found, pinned on the wire against a real spamgate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hardening.live import running_spamgate
from tests.integration.conftest import Spamgate
from tests.integration.smtp_client import RawClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gate() -> Iterator[Spamgate]:
    with running_spamgate('url = "maildir:md"') as sg:
        yield sg


@pytest.mark.parametrize("arg", ["<", "<@", " <", "<@:", "<@a,@", "<a@[", "<a@[a@x>", "<alice@[a@MIM<\"IZ"])
def test_truncated_address_is_a_553_not_an_internal_error(gate: Spamgate, arg: str) -> None:
    """email's header parser raised IndexError on ``MAIL FROM:<`` (found by hypothesis) and returned
    a defect object aiosmtpd choked on for ``MAIL FROM:<a@[`` (found by atheris): the client got
    ``451 4.3.0 Internal error`` (retry forever) and the log a traceback."""
    c = RawClient(gate.port, timeout=10)
    try:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO regress.test")[0] == 250
        code, text = c.cmd(f"MAIL FROM:{arg}")
        assert (code, text) == (553, "5.1.3 Error: malformed address")
        assert c.cmd("MAIL FROM:<ok@example.org>")[0] == 250
        code, text = c.cmd(f"RCPT TO:{arg}")
        assert (code, text) == (553, "5.1.3 Error: malformed address")
    finally:
        c.close()
    assert "internal error" not in gate.log()
