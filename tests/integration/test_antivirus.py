"""The antivirus and attachments filters through real SMTP: client -> spamgate -> real Postfix, real clamd."""

from __future__ import annotations

import email
import email.policy
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from tests.filters.attachment_samples import (
    EICAR,
    EXE,
    attachment,
    malformed_zip,
    message,
    zip_bomb,
    zip_of,
)
from tests.integration.conftest import Spamgate, SpamgateFactory
from tests.integration.services.clamd import STREAM_MAX, Clamd, start_clamd
from tests.integration.services.postfix import Postfix
from tests.integration.smtp_client import SendResult, send

pytestmark = pytest.mark.integration

ALICE = "alice@example.edu"
VIRUS_REPLY = (554, "5.7.1 Message rejected: virus found (Eicar-Test-Signature.UNOFFICIAL)")


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    c = start_clamd(tmp_path_factory.mktemp("clamd"))
    yield c
    c.stop()


@pytest.fixture
def own_clamd(tmp_path: Path) -> Iterator[Clamd]:
    """A clamd of the test's own, to stop and start again."""
    c = start_clamd(tmp_path / "clamd")
    yield c
    c.stop()


def av_config(c: Clamd, extra: str = "") -> str:
    return f'[filters.antivirus]\nenabled = true\nhost = "127.0.0.1"\nport = {c.port}\n{extra}\n'


def tagged(*parts: tuple[str, bytes, str]) -> tuple[str, bytes]:
    tag = uuid.uuid4().hex
    return tag, message(*parts, subject=f"test {tag}")


def submit(sg: Spamgate, raw: bytes) -> SendResult:
    return send(sg.port, "sender@example.org", [ALICE], raw)


def delivered(sg: Spamgate, postfix: Postfix, tag: str, raw: bytes) -> Message:
    res = submit(sg, raw)
    assert res.delivered, (res, sg.log())
    got = postfix.wait_for(lambda m: tag.encode() in m, rcpt=ALICE)
    return email.message_from_bytes(got, policy=email.policy.compat32)


def refused(sg: Spamgate, postfix: Postfix, tag: str, raw: bytes) -> tuple[int, str]:
    res = submit(sg, raw)
    assert res.data is not None, res
    assert not any(tag.encode() in m for m in postfix.messages(ALICE))
    return res.data


def metric(sg: Spamgate, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{sg.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    key = f"{name}{{{labels}}}" if labels else name
    return next((float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(key + " ")), 0.0)


def test_minimal_config_eicar_and_zipped_eicar_rejected_clean_delivered(
    spamgate: SpamgateFactory, postfix: Postfix, clamd: Clamd
) -> None:
    sg = spamgate(av_config(clamd))  # listen + backend + the three antivirus keys
    tag, raw = tagged(attachment("eicar.com.txt", EICAR, "text/plain"))
    assert refused(sg, postfix, tag, raw) == VIRUS_REPLY
    tag, raw = tagged(attachment("eicar.zip", zip_of({"docs/eicar.com": EICAR}), "application/zip"))
    assert refused(sg, postfix, tag, raw) == VIRUS_REPLY
    tag, raw = tagged(attachment("notes.txt", b"nothing to see here\n", "text/plain"))
    m = delivered(sg, postfix, tag, raw)
    assert "AV_CLEAN(0.0)" in (m.get("X-Spam-Status") or ""), m.get("X-Spam-Status")
    assert (m.get("X-Spamgate-Antivirus") or "").startswith("clean (clamd at 127.0.0.1:")
    assert metric(sg, "spamgate_antivirus_scans_total", 'result="virus"') == 2
    assert metric(sg, "spamgate_antivirus_scans_total", 'result="clean"') == 1
    assert "signature=Eicar-Test-Signature.UNOFFICIAL" in sg.log()
    assert metric(sg, "spamgate_antivirus_clamd_up") == 1


def test_oversize_skipped_with_a_zero_point_symbol(spamgate: SpamgateFactory, postfix: Postfix, clamd: Clamd) -> None:
    # max_size above clamd's StreamMaxLength: clamd itself refuses the stream; still not an error.
    sg = spamgate(av_config(clamd, f"max_size = {STREAM_MAX * 4}"))
    tag, raw = tagged(attachment("big.bin", bytes(range(256)) * (STREAM_MAX // 256 + 1)))
    m = delivered(sg, postfix, tag, raw)
    assert "AV_SKIPPED_SIZE(0.0)" in (m.get("X-Spam-Status") or "")
    assert metric(sg, "spamgate_antivirus_scans_total", 'result="skipped"') == 1
    assert metric(sg, "spamgate_antivirus_scans_total", 'result="error"') == 0


def test_quarantine_action_holds_the_virus(spamgate: SpamgateFactory, postfix: Postfix, clamd: Clamd,
                                           tmp_path: Path) -> None:
    qdir = tmp_path / "quarantine"
    sg = spamgate(av_config(clamd, 'action = "quarantine"') + f'[pipeline]\nquarantine_dir = "{qdir}"\n')
    tag, raw = tagged(attachment("eicar.txt", EICAR, "text/plain"))
    code, text = refused(sg, postfix, tag, raw)
    assert code == 250 and "quarantined as" in text
    held = [p.read_bytes() for p in qdir.rglob("*.eml") if p.is_file() and tag.encode() in p.read_bytes()]
    assert held and b"X-Spamgate-Antivirus: virus found (Eicar-Test-Signature.UNOFFICIAL)" in held[0]


@pytest.mark.parametrize("on_error", ["continue", "tempfail"])
def test_clamd_stopped_mid_run_follows_on_error_and_recovers(
    spamgate: SpamgateFactory, postfix: Postfix, own_clamd: Clamd, on_error: str
) -> None:
    sg = spamgate(av_config(own_clamd, f'on_error = "{on_error}"'))
    tag, raw = tagged(attachment("a.txt", b"before\n", "text/plain"))
    assert "AV_CLEAN" in (delivered(sg, postfix, tag, raw).get("X-Spam-Status") or "")
    own_clamd.stop()
    for i in range(3):
        tag, raw = tagged(attachment("b.txt", f"during {i}\n".encode(), "text/plain"))
        if on_error == "continue":
            m = delivered(sg, postfix, tag, raw)
            assert "ANTIVIRUS_ERROR(0.0)" in (m.get("X-Spam-Status") or "")
        else:
            assert refused(sg, postfix, tag, raw) == (451, "4.7.1 Temporary local problem, please try again later")
    tag, raw = tagged(attachment("eicar.txt", EICAR, "text/plain"))
    if on_error == "tempfail":  # never relayed unscanned
        assert refused(sg, postfix, tag, raw)[0] == 451
    own_clamd.start()
    tag, raw = tagged(attachment("eicar.txt", EICAR, "text/plain"))
    assert refused(sg, postfix, tag, raw) == VIRUS_REPLY
    tag, raw = tagged(attachment("c.txt", b"after\n", "text/plain"))
    assert "AV_CLEAN" in (delivered(sg, postfix, tag, raw).get("X-Spam-Status") or "")
    log = sg.log()
    assert log.count("state=down") == 1 and log.count("state=recovered") == 1, log
    assert "Traceback" not in log
    assert metric(sg, "spamgate_antivirus_scans_total", 'result="error"') == (4 if on_error == "tempfail" else 3)


ATT_MINIMAL = "[filters.attachments]\nenabled = true\n"


def test_attachments_minimal_config_refuses_exe_naming_the_file(spamgate: SpamgateFactory, postfix: Postfix) -> None:
    sg = spamgate(ATT_MINIMAL)
    tag, raw = tagged(attachment("invoice.pdf.exe", EXE))
    code, text = refused(sg, postfix, tag, raw)
    assert (code, text) == (554, '5.7.1 Message rejected: attachment "invoice.pdf.exe" not allowed '
                                 "(blocked extension .exe)")
    tag, raw = tagged(attachment("report.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf"))
    m = delivered(sg, postfix, tag, raw)
    assert "ATT_" not in (m.get("X-Spam-Status") or "")


@pytest.mark.parametrize(
    ("part", "expect"),
    [
        (attachment("invoice.pdf", EXE, "application/pdf"), "content is exe"),
        (attachment("docs.zip", zip_of({"a/setup.scr": b"x"})), "docs.zip/a/setup.scr"),
        (("application/octet-stream", b"x", "attachment; filename*=utf-8''f%C3%BCr.js"), '"f?r.js"'),
    ],
)
def test_attachment_rules_refuse_through_smtp(
    spamgate: SpamgateFactory, postfix: Postfix, part: tuple[str, bytes, str], expect: str
) -> None:
    sg = spamgate(ATT_MINIMAL)
    tag, raw = tagged(part)
    code, text = refused(sg, postfix, tag, raw)
    assert code == 554 and text.startswith("5.7.1 Message rejected: attachment"), text
    assert expect in text, text


def test_scored_rules_bomb_and_malformed_zip_are_symbols(spamgate: SpamgateFactory, postfix: Postfix) -> None:
    sg = spamgate(ATT_MINIMAL)
    cases = {
        "ATT_ARCHIVE_BOMB": attachment("42.zip", zip_bomb(), "application/zip"),
        "ATT_ARCHIVE_MALFORMED": attachment("broken.zip", malformed_zip(), "application/zip"),
        "ATT_ENCRYPTED_ARCHIVE": attachment("x.zip", zip_of({"a.doc": b"x" * 50}, encrypted=("a.doc",))),
        "ATT_MACRO": attachment("budget.xlsm", zip_of({"xl/workbook.xml": b"x"})),
    }
    for symbol, part in cases.items():
        tag, raw = tagged(part)
        status = delivered(sg, postfix, tag, raw).get("X-Spam-Status") or ""
        assert f"{symbol}(" in status, (symbol, status)
    assert metric(sg, "spamgate_attachments_findings_total", 'symbol="ATT_ARCHIVE_BOMB"') == 1
