"""SMTP reply texts spamgate itself sends, and the normaliser for aiosmtpd's own replies."""

from __future__ import annotations

import re

from spamgate.filters.sdk.api import Reply

BACKEND_UNAVAILABLE = Reply(451, "4.4.1", "Backend mail server unavailable, please try again later")
BACKEND_TIMEOUT = Reply(451, "4.4.2", "Backend mail server timed out, please try again later")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, please try again later")
TOO_MANY_SESSIONS = Reply(421, "4.7.0", "Too many connections, please try again later")
TOO_MANY_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address, please try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
BAD_ADDRESS = Reply(501, "5.1.7", "Invalid address: control characters are not allowed")
BARE_NEWLINE = Reply(554, "5.6.0", "Message contains bare CR or LF line endings (SMTP smuggling protection)")
NO_VALID_RCPT = Reply(554, "5.5.1", "No valid recipients")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, please try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
SPAM_REJECT = Reply(550, "5.7.1", "Message rejected as spam")
SPAM_TEMPFAIL = Reply(451, "4.7.1", "Message deferred, please try again later")
QUARANTINE_FULL = Reply(451, "4.3.1", "Insufficient system storage, please try again later")

# RFC 2034: no enhanced code on the greeting, EHLO/HELO, or multi-line continuations we build.
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
_DEFAULT_ENHANCED = {
    "2": "2.0.0",
    "4": "4.0.0",
    "5": "5.5.2",
}
_SPECIFIC = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.7.1",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.5.0",
    "555": "5.5.4",
    "221": "2.0.0",
    "250": "2.0.0",
    "235": "2.7.0",
}
_NO_ENHANCED_CODES = {"220", "334", "354"}


def enhance(line: str) -> str:
    """Add an RFC 3463 enhanced status code to a one-line reply that lacks one."""
    if len(line) < 4 or not line[:3].isdigit() or line[3] not in " -":
        return line
    code = line[:3]
    if code in _NO_ENHANCED_CODES or _HAS_ENHANCED.match(line):
        return line
    enh = _SPECIFIC.get(code) or _DEFAULT_ENHANCED.get(code[0])
    if enh is None:
        return line
    return f"{code}{line[3]}{enh} {line[4:]}"


def format_multiline(code: int, message: str) -> list[str]:
    """A (possibly multi-line) backend reply as the lines to send, ``code-`` continued."""
    lines = message.split("\n") if message else [""]
    out = [f"{code}-{text}" for text in lines[:-1]]
    out.append(f"{code} {lines[-1]}".rstrip())
    return out
