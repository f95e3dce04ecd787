"""``spamgate audit`` against real servers: a bare Postfix relaying for loopback
(Vulnerable) and spamgate with local_sender and STARTTLS in front of Postfix (Secured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, SpamgateFactory
from tests.integration.services.postfix import Postfix, running_postfix
from tests.integration.services.testca import make_ca


def spamgate_audit(*args: str) -> tuple[int, str, str]:
    r = subprocess.run(
        [sys.executable, "-m", "spamgate.proxy", "audit", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def open_postfix() -> Iterator[Postfix]:
    """A second, private Postfix that trusts all of loopback: the textbook unprotected relay."""
    with running_postfix("mynetworks = 127.0.0.0/8\n", prefix="spamgate-open-postfix-") as pf:
        yield pf


def results(stdout: str) -> dict[str, str]:
    doc = json.loads(stdout)
    return {c["name"]: c["result"] for c in doc["checks"]}


def test_bare_postfix_relay_is_vulnerable(open_postfix: Postfix) -> None:
    rc, out, err = spamgate_audit(
        f"127.0.0.1:{open_postfix.port}", "--local-domain", "example.edu", "--json", "--timeout", "20"
    )
    assert rc == 1, err
    assert results(out) == {
        "auth_before_tls": "Secured",
        "starttls": "Vulnerable",
        "spoofable_sender": "Vulnerable",
        "open_relay": "Vulnerable",
        "header_spoof": "Not tested",
    }
    assert json.loads(out)["vulnerable"] is True

    rc, out, _ = spamgate_audit(f"127.0.0.1:{open_postfix.port}", "--local-domain", "example.edu")
    assert rc == 1
    assert "spoofable_sender  Vulnerable" in out and "open_relay        Vulnerable" in out
    assert open_postfix.all_messages() == [], "the audit stops before DATA without --send"


def test_spamgate_in_front_of_postfix_is_secured(spamgate: SpamgateFactory, postfix: Postfix, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    pw = tmp_path / "passwd"
    pw.write_text("")
    sg = spamgate(
        "[filters.local_sender]\nenabled = true\n",
        listen_toml=(
            '[[listen]]\nhost = "127.0.0.1"\nport = @PORT@\nrole = "mx"\n'
            f'tls_cert = "{ca.cert}"\ntls_key = "{ca.key}"\n'
        ),
        auth_toml=f'local_domains = ["example.edu"]\nbackend = "file"\npassword_file = "{pw}"\n',
    )
    before = len(postfix.messages("postmaster@example.edu"))
    rc, out, err = spamgate_audit(
        f"127.0.0.1:{sg.port}", "--local-domain", "example.edu", "--json", "--send", "--timeout", "20"
    )
    assert results(out) == {
        "auth_before_tls": "Secured",
        "starttls": "Secured",
        "spoofable_sender": "Secured",
        "open_relay": "Secured",
        "header_spoof": "Secured",
    }, out
    assert rc == 0, err
    details = {c["name"]: c["detail"] for c in json.loads(out)["checks"]}
    assert "553 5.7.1 <postmaster@example.edu>: Sender address rejected: not logged in" in details["spoofable_sender"]
    assert "AUTH after TLS: LOGIN PLAIN" in details["starttls"]
    assert len(postfix.messages("postmaster@example.edu")) == before, "the spoofed test message was refused"

    rc, out, _ = spamgate_audit(
        f"127.0.0.1:{sg.port}", "--local-domain", "example.edu", "--verify-tls", "--timeout", "20"
    )
    assert rc == 1 and "starttls          Vulnerable" in out, "the test CA is not trusted by the system store"
