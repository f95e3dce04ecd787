"""The spamassassin filter through real SMTP: client -> real spamgate -> real Postfix, real spamd."""

from __future__ import annotations

import email
import email.policy
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, Spamgate, SpamgateFactory
from tests.integration.services.postfix import Postfix
from tests.integration.services.spamd import SA_EXAMPLES, Spamd, start_spamd
from tests.integration.smtp_client import send

pytestmark = pytest.mark.integration

SPAM = (SA_EXAMPLES / "sample-spam.txt").read_bytes()
HAM = (SA_EXAMPLES / "sample-nonspam.txt").read_bytes()
ALICE = "alice@example.edu"


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    s = start_spamd(tmp_path_factory.mktemp("spamd"))
    yield s
    s.close()


@pytest.fixture
def own_spamd(tmp_path: Path) -> Iterator[Spamd]:
    """A spamd of the test's own, to stop and start again."""
    s = start_spamd(tmp_path / "spamd", children=2)
    yield s
    s.close()


def config(spamd: Spamd, on_error: str = "continue", options: str = "") -> str:
    return f"""
[actions]
reject = 15.0
add_header = 6.0

[filters.spamassassin]
enabled = true
host = "127.0.0.1"
port = {spamd.port}
timeout = 20
on_error = "{on_error}"
{options}
"""


def tagged(message: bytes, extra_headers: str = "") -> tuple[str, bytes]:
    """A copy with a unique Message-ID (and extra headers on top) to find it in the mailbox."""
    tag = uuid.uuid4().hex
    head, sep, body = message.replace(b"\r\n", b"\n").partition(b"\n\n")
    kept = [ln for ln in head.split(b"\n") if not ln.lower().startswith(b"message-id:")]
    top = f"Message-ID: <{tag}@spamassassin.test>\n{extra_headers}".encode()
    return tag, top + b"\n".join(kept) + sep + body + f"\nref {tag}\n".encode()


def deliver(sg: Spamgate, postfix: Postfix, message: bytes, extra_headers: str = "") -> Message:
    tag, msg = tagged(message, extra_headers)
    res = send(sg.port, "sender@example.org", [ALICE], msg)
    assert res.delivered, (res, sg.log())
    raw = postfix.wait_for(lambda m: tag.encode() in m, rcpt=ALICE)
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def refused(sg: Spamgate, postfix: Postfix, message: bytes) -> tuple[int, str]:
    tag, msg = tagged(message)
    res = send(sg.port, "sender@example.org", [ALICE], msg)
    assert res.data is not None, res
    # Refused at end of DATA means never handed to Postfix: nothing to wait for.
    assert not any(tag.encode() in m for m in postfix.messages(ALICE))
    return res.data


def metric(sg: Spamgate, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{sg.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


def test_gtube_rejected_at_end_of_data(spamgate: SpamgateFactory, postfix: Postfix, spamd: Spamd) -> None:
    sg = spamgate(config(spamd))
    code, text = refused(sg, postfix, SPAM)
    assert code == 550 and text.startswith("5.7.1"), text
    assert "SPAMD" in text
    assert metric(sg, "spamgate_spamd_scans_total", 'result="spam"') == 1


def test_ham_relayed_with_spamassassin_style_headers(spamgate: SpamgateFactory, postfix: Postfix, spamd: Spamd) -> None:
    sg = spamgate(config(spamd))
    m = deliver(sg, postfix, HAM)
    status = m.get_all("X-Spam-Status") or []
    assert len(status) == 1 and status[0].startswith("No, score="), status
    assert "SPAMD(" in status[0] and "required=6.0" in status[0]
    assert m.get_all("X-Spam-Score") and m.get("X-Spam-Flag") is None
    result = m.get("X-Spamd-Result") or ""
    assert result.startswith("No, score=") and "required=5.0" in result
    assert metric(sg, "spamgate_spamd_scans_total", 'result="ham"') == 1


def test_report_verb_and_user_through_the_engine(spamgate: SpamgateFactory, postfix: Postfix, spamd: Spamd) -> None:
    sg = spamgate(config(spamd, options='verb = "report"\nuser = "spamgate"'))
    m = deliver(sg, postfix, HAM)
    tests = (m.get("X-Spamd-Result") or "").split("tests=")[-1]
    assert re.fullmatch(r"none|[A-Z0-9_]+\(-?[\d.]+\)(,[A-Z0-9_]+\(-?[\d.]+\))*", tests), tests
    mid = (m.get("Message-ID") or "").strip("<>")
    assert any(mid in ln and " for spamgate:" in ln for ln in spamd.output().splitlines())


def test_forged_inbound_spam_headers_removed(spamgate: SpamgateFactory, postfix: Postfix, spamd: Spamd) -> None:
    sg = spamgate(config(spamd))
    forged = (
        "X-Spam-Status: No, score=-50.0 required=5.0 tests=ALL_TRUSTED\n"
        "X-Spam-Flag: NO\nX-Spam-Score: -50.0\nX-Spam-Level: \n"
        "X-Spam-Checker-Version: SpamAssassin 4.0.1 on trusted.example\n"
        "X-Spamd-Result: No, score=-50.0 tests=forged\n"
    )
    m = deliver(sg, postfix, HAM, forged)
    status = m.get_all("X-Spam-Status") or []
    assert len(status) == 1 and "-50" not in status[0] and "SPAMD(" in status[0], status
    assert [s for s in m.get_all("X-Spam-Score") or [] if "-50" in s] == []
    assert m.get("X-Spam-Checker-Version") is None and m.get("X-Spam-Level") is None
    assert m.get("X-Spam-Flag") is None
    assert "forged" not in (m.get("X-Spamd-Result") or "")


def test_oversize_message_skipped_but_scored_by_the_rest(
    spamgate: SpamgateFactory, postfix: Postfix, spamd: Spamd
) -> None:
    sg = spamgate(config(spamd, options="max_size = 500"))
    assert len(SPAM) > 500
    m = deliver(sg, postfix, SPAM)  # GTUBE, but too big to be scanned: relayed
    status = m.get("X-Spam-Status") or ""
    assert "SPAMD_SKIPPED_SIZE(0.0)" in status and "SPAMD(" not in status, status
    assert metric(sg, "spamgate_spamd_skipped_total", 'reason="size"') == 1


def test_spamd_down_continue_then_recovers(spamgate: SpamgateFactory, postfix: Postfix, own_spamd: Spamd) -> None:
    sg = spamgate(config(own_spamd, on_error="continue"))
    code, _ = refused(sg, postfix, SPAM)
    assert code == 550
    own_spamd.stop()
    m = deliver(sg, postfix, SPAM)  # fail-open: GTUBE gets through, marked
    status = m.get("X-Spam-Status") or ""
    assert "SPAMASSASSIN_ERROR(0.0)" in status and "SPAMD(" not in status, status
    assert metric(sg, "spamgate_spamd_errors_total", 'kind="connect"') == 1
    own_spamd.start()
    code, text = refused(sg, postfix, SPAM)
    assert (code, text[:5]) == (550, "5.7.1")


def test_spamd_down_tempfail_then_recovers(spamgate: SpamgateFactory, postfix: Postfix, own_spamd: Spamd) -> None:
    sg = spamgate(config(own_spamd, on_error="tempfail"))
    own_spamd.stop()
    code, text = refused(sg, postfix, HAM)
    assert code == 451 and text.startswith("4."), text
    code, _ = refused(sg, postfix, SPAM)
    assert code == 451
    own_spamd.start()
    m = deliver(sg, postfix, HAM)
    assert "SPAMD(" in (m.get("X-Spam-Status") or "")
    code, _ = refused(sg, postfix, SPAM)
    assert code == 550


def spamgate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spamgate.proxy", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip


def test_learn_command_with_the_spamgate_config_changes_bayes(
    spamgate: SpamgateFactory, spamd: Spamd, tmp_path: Path
) -> None:
    sg = spamgate(config(spamd), start=False)
    _, message = tagged(SPAM)
    (tmp_path / "spam.eml").write_bytes(message)
    before = spamd.bayes_magic()
    res = spamgate_cli("learn", "--spam", "--config", str(sg.config_path), str(tmp_path / "spam.eml"))
    assert res.returncode == 0, res
    assert "spam: 1 learned" in res.stdout
    assert spamd.bayes_magic()["nspam"] == before["nspam"] + 1
    res = spamgate_cli("learn", "--spam", "--config", str(sg.config_path), str(tmp_path / "spam.eml"))
    assert res.returncode == 0 and "spam: 0 learned, 1 already known" in res.stdout, res


def test_quarantine_release_teaches_ham(spamgate: SpamgateFactory, postfix: Postfix, spamd: Spamd) -> None:
    sg = spamgate(config(spamd).replace("reject = 15.0", "reject = 100000.0\nquarantine = 15.0"))
    tag, msg = tagged(SPAM)
    res = send(sg.port, "sender@example.org", [ALICE], msg)
    assert res.data is not None and res.data[0] == 250 and "quarantined as" in res.data[1], res
    qid = res.data[1].rsplit(" ", 1)[-1]
    before = spamd.bayes_magic()
    out = spamgate_cli("quarantine", "release", qid, "--config", str(sg.config_path), "--learn-ham")
    assert out.returncode == 0, out
    postfix.wait_for(lambda m: tag.encode() in m, rcpt=ALICE)
    assert spamd.bayes_magic()["nham"] == before["nham"] + 1


def test_forged_headers_removed_even_when_spamd_is_down(
    spamgate: SpamgateFactory, postfix: Postfix, own_spamd: Spamd
) -> None:
    sg = spamgate(config(own_spamd, on_error="continue"))
    own_spamd.stop()
    m = deliver(sg, postfix, SPAM, "X-Spam-Status: No, score=-50.0 required=5.0 tests=ALL_TRUSTED\nX-Spam-Flag: NO\n")
    status = m.get_all("X-Spam-Status") or []
    assert len(status) == 1 and "SPAMASSASSIN_ERROR" in status[0], status
    assert m.get("X-Spam-Flag") is None


def test_spamd_timing_out_follows_on_error(spamgate: SpamgateFactory, postfix: Postfix, own_spamd: Spamd) -> None:
    sg = spamgate(config(own_spamd, on_error="tempfail", options="scan_timeout = 1.0"))
    own_spamd.freeze()
    try:
        code, _ = refused(sg, postfix, HAM)
    finally:
        own_spamd.thaw()
    assert code == 451
    assert metric(sg, "spamgate_spamd_errors_total", 'kind="timeout"') == 1
    assert "SPAMD(" in (deliver(sg, postfix, HAM).get("X-Spam-Status") or "")
