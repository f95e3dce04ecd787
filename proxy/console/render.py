"""A stored message made safe to look at: its headers and a plain-text rendering of the body.

The body is never shown as HTML. A text/plain part is shown as text; an HTML-only
message is reduced to its text content (tags dropped, <script>/<style> contents
discarded) and that text is then escaped like any other; the markup itself can be
looked at as escaped source text. Attachments are listed by
name and type, never opened.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import ClassVar

__all__ = ["RenderedMessage", "html_to_text", "render_message"]

MAX_BODY_CHARS = 200_000
SCORE_HEADERS = ("x-spam-status", "x-spam-report", "x-spam-flag", "x-spam-level", "x-spamgate-observe")


class _TextOnly(HTMLParser):
    _SKIP: ClassVar[frozenset[str]] = frozenset({"script", "style", "head", "title", "template", "noscript"})
    _BREAK: ClassVar[frozenset[str]] = frozenset(
        {"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table", "blockquote"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOnly()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return "\n".join(line for line in lines if line)


@dataclass
class RenderedMessage:
    headers: list[tuple[str, str]]
    body: str
    body_source: str  # "text/plain", "text/html (as text)" or "none"
    attachments: list[str] = field(default_factory=list)
    html_source: str = ""  # the HTML part's markup, to be shown escaped (as text), never rendered

    @property
    def score_headers(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers if k.lower() in SCORE_HEADERS]


def _content(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def render_message(raw: bytes) -> RenderedMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    headers: list[tuple[str, str]] = []
    for k, v in msg.raw_items():
        headers.append((k, " ".join(str(v).split())))
    plain = html = None
    attachments: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        assert isinstance(part, EmailMessage)
        ctype = part.get_content_type()
        if part.is_attachment():
            attachments.append(f"{part.get_filename() or '(unnamed)'} ({ctype})")
        elif ctype == "text/plain" and plain is None:
            plain = _content(part)
        elif ctype == "text/html" and html is None:
            html = _content(part)
    if plain is not None:
        body, source = plain, "text/plain"
    elif html is not None:
        body, source = html_to_text(html), "text/html (shown as text)"
    else:
        body, source = "", "none"
    if len(body) > MAX_BODY_CHARS:
        body = body[:MAX_BODY_CHARS] + "\n[... truncated]"
    return RenderedMessage(headers, body, source, attachments, (html or "")[:MAX_BODY_CHARS])
