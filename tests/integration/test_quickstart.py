"""README command one: `spamgate run` with no config works on a bare machine (Maildir backend)."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

from tests.integration.services.postfix import free_port, wait_port

REPO = Path(__file__).resolve().parents[2]


def test_embedded_default_delivers_into_a_maildir(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spamgate.proxy", "run", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        wait_port(port, 20)
        msg = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: quickstart\r\n\r\n.dot line\r\nhello\r\n"
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
            code, text = s.ehlo("tester.example")
            assert code == 250 and b"PIPELINING" in text and b"ENHANCEDSTATUSCODES" in text
            assert s.has_extn("size") and s.has_extn("8bitmime") and s.has_extn("smtputf8")
            assert b"2.0.0" not in text
            assert b"AUTH" not in text
            s.sendmail("a@example.org", ["b@example.com"], msg)
        files = list((tmp_path / "spamgate-maildir" / "new").iterdir())
        assert len(files) == 1
        data = files[0].read_bytes()
        assert data.startswith(b"Return-Path: <a@example.org>\r\nDelivered-To: b@example.com\r\nReceived: from tester")
        assert data.endswith(b"\r\n\r\n.dot line\r\nhello\r\n")
        assert b"X-Spam-Status: No, score=0.0" in data
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()
    log = out.decode()
    assert "spamgate ready" in log and "action=accept" in log and "stopped" in log
