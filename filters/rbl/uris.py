"""The domains of the URLs a message's readers would see, for URI blocklists.

Text and HTML parts are decoded (transfer encoding, charset, HTML entities) before
searching, because spam hides its links behind base64 and ``&#104;ttp``. Domains are
reduced to their registered domain (public suffix list) since URIBL/SURBL/DBL-style
lists list ``spammer.example``, not every ``www1.spammer.example``. IP-literal hosts
are kept as IPs (the caller reverses them).
"""

from __future__ import annotations

import functools
import html
import ipaddress
import re
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message as EmailMessage
from email.policy import compat32

from publicsuffixlist import PublicSuffixList

__all__ = ["MAX_SCAN_CHARS", "message_url_hosts", "registered_domain", "url_hosts"]

# Bounds the regex work on a huge message; URLs past this point are not looked up.
MAX_SCAN_CHARS = 1_000_000

_URL = re.compile(r"(?i)\b(?:https?|ftp)://([^\s/?#<>\"'\\]+)|\b(www\d*\.[a-z0-9.-]+\.[a-z]{2,})")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList(accept_unknown=True)


def registered_domain(host: str) -> str | None:
    """``www.spammer.example.co.uk`` -> ``spammer.example.co.uk``... per the public suffix list."""
    result = _psl().privatesuffix(host)
    return str(result) if result else None


def _normalize(raw: str) -> str | None:
    host = raw.rsplit("@", 1)[-1]
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    else:
        host = host.split(":", 1)[0]
    host = host.strip().rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return registered_domain(host)


def url_hosts(text: str) -> Iterator[str]:
    """Registered domains (or IP literals) of URLs in ``text``, in order, repeats included."""
    for m in _URL.finditer(text[:MAX_SCAN_CHARS]):
        host = _normalize(m.group(1) or m.group(2))
        if host:
            yield host


def _part_text(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:
        text = payload.decode("latin-1")
    if part.get_content_subtype() == "html":
        text = html.unescape(text)
    return text


def message_url_hosts(raw: bytes, limit: int) -> list[str]:
    """Up to ``limit`` distinct URL domains from the text and HTML parts of a message."""
    found: dict[str, None] = {}
    if limit <= 0:
        return []
    msg = message_from_bytes(raw, policy=compat32)
    for part in msg.walk():
        if part.get_content_maintype() != "text" or part.get_content_subtype() not in ("plain", "html"):
            continue
        for host in url_hosts(_part_text(part)):
            found.setdefault(host, None)
            if len(found) >= limit:
                return list(found)
    return list(found)
