"""Release-link tokens (signed, expiring, key file 0600) and the safe message rendering."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from spamgate.proxy.console.render import html_to_text, render_message
from spamgate.proxy.release_tokens import LinkKey, TokenError


def test_key_file_is_created_0600_once(tmp_path: Path) -> None:
    k1 = LinkKey.load(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "digest.key").st_mode)
    assert mode == 0o600
    token = k1.sign("q1", "bob@example.edu", 2e9)
    assert LinkKey.load(tmp_path).verify(token, now=1e9).qid == "q1"


def test_tampered_expired_and_foreign_tokens_are_refused(tmp_path: Path) -> None:
    key = LinkKey(b"k" * 32)
    token = key.sign("20260101-abcd", "bob@example.edu", 1000)
    link = key.verify(token, now=999)
    assert (link.qid, link.rcpt) == ("20260101-abcd", "bob@example.edu")
    with pytest.raises(TokenError, match="expired"):
        key.verify(token, now=1000)
    _payload, mac = token.split(".")
    forged = LinkKey(b"k" * 32).sign("other", "bob@example.edu", 1000).split(".")[0]
    with pytest.raises(TokenError, match="tampered"):
        key.verify(f"{forged}.{mac}", now=0)
    with pytest.raises(TokenError, match="tampered"):
        LinkKey(b"x" * 32).verify(token, now=0)
    with pytest.raises(TokenError):
        key.verify("garbage", now=0)
    assert key.form_token(token) != key.form_token(token + "x")


def test_html_is_reduced_to_text_without_scripts() -> None:
    text = html_to_text("<p>Hi <b>there</b></p><script>alert(1)</script><style>p{}</style><div>&lt;b&gt;</div>")
    assert text == "Hi there\n<b>"


def test_render_prefers_plain_text_and_keeps_html_source_as_text() -> None:
    raw = (b"Subject: x\r\nX-Spam-Status: Yes, score=7.0 tests=A(7.0)\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n"
           b"<script>x()</script><p>hello</p>\r\n--b\r\nContent-Type: application/pdf\r\n"
           b"Content-Disposition: attachment; filename=\"a.pdf\"\r\n\r\nAAAA\r\n--b--\r\n")
    msg = render_message(raw)
    assert msg.body == "hello" and msg.body_source.startswith("text/html")
    assert "<script>" in msg.html_source
    assert msg.attachments == ["a.pdf (application/pdf)"]
    assert msg.score_headers == [("X-Spam-Status", "Yes, score=7.0 tests=A(7.0)")]
