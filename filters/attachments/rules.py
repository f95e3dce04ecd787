"""The attachment policy as pure functions: a walked message in, findings out.

A :class:`Finding` is one rule firing on one file: its symbol, the file it is about and
a detail; ``block`` findings are what ``block_action = "reject"`` refuses with
``554 5.7.1`` naming the file.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from spamgate.filters.attachments.archives import ARCHIVE_KINDS, ArchiveLimits, Member, list_archive
from spamgate.filters.attachments.detect import COMPATIBLE, ole_has_vba, sniff
from spamgate.filters.attachments.mime import FilePart, MimeLimits, Walk, walk

__all__ = [
    "DEFAULT_BLOCKED",
    "DEFAULT_MACRO",
    "DEFAULT_SCORES",
    "Finding",
    "Policy",
    "evaluate",
    "extensions",
    "inspect_message",
]

# What admins usually refuse outright (executables, scripts, shortcuts, disk images).
DEFAULT_BLOCKED = (
    "exe", "scr", "com", "pif", "bat", "cmd", "js", "jse", "vbs", "vbe", "wsf", "wsh", "hta", "lnk",
    "iso", "img", "vhd", "vhdx", "msi", "msp", "ps1", "psm1", "jar", "cpl", "reg", "dll", "scf",
    "application", "gadget", "msc", "inf", "url", "chm", "appx", "appxbundle", "msix", "xll",
)  # fmt: skip
DEFAULT_MACRO = ("docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppam", "ppsm", "sldm")

BLOCKED = "ATT_BLOCKED"  # a blocked extension or detected type, on the file or inside an archive
DOUBLE_EXT = "ATT_DOUBLE_EXT"
TYPE_MISMATCH = "ATT_TYPE_MISMATCH"
ENCRYPTED = "ATT_ENCRYPTED_ARCHIVE"
MACRO = "ATT_MACRO"
ARCHIVE_BOMB = "ATT_ARCHIVE_BOMB"
ARCHIVE_MALFORMED = "ATT_ARCHIVE_MALFORMED"
ARCHIVE_LIMIT = "ATT_ARCHIVE_LIMIT"
MIME_LIMIT = "ATT_MIME_LIMIT"

DEFAULT_SCORES: dict[str, float] = {
    BLOCKED: 10.0,  # counts only with block_action = "score"
    DOUBLE_EXT: 3.0,
    TYPE_MISMATCH: 3.0,
    ENCRYPTED: 4.0,
    MACRO: 4.0,
    ARCHIVE_BOMB: 6.0,
    ARCHIVE_MALFORMED: 2.0,
    ARCHIVE_LIMIT: 1.0,
    MIME_LIMIT: 1.0,
}

# A "harmless-looking" extension before the real one is the classic disguise (invoice.pdf.exe).
_DECOY = frozenset({
    "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "txt", "rtf", "jpg", "jpeg", "png", "gif", "bmp",
    "zip", "rar", "htm", "html", "mp3", "mp4", "avi", "csv", "odt", "xml", "eml",
})  # fmt: skip


@dataclass(frozen=True)
class Finding:
    symbol: str
    file: str
    detail: str
    block: bool = False


@dataclass(frozen=True)
class Policy:
    blocked: frozenset[str] = frozenset(DEFAULT_BLOCKED)
    macro: frozenset[str] = frozenset(DEFAULT_MACRO)
    scan_archives: bool = True
    mime: MimeLimits = field(default_factory=MimeLimits)
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


def clean_name(name: str) -> str:
    """The name as Windows would show and run it: no bidi/invisible characters, no trailing dots or spaces."""
    visible = "".join(c for c in name if unicodedata.category(c) not in ("Cf", "Cc"))
    return visible.replace("\\", "/").rsplit("/", 1)[-1].rstrip(" .").strip()


def extensions(name: str) -> list[str]:
    """``invoice.pdf.exe`` -> ``["pdf", "exe"]`` (lower case; a leading dot is not an extension)."""
    parts = clean_name(name).lower().split(".")
    return [p.strip() for p in parts[1:] if p.strip()]


def _by_name(name: str, where: str, policy: Policy) -> list[Finding]:
    exts = extensions(name)
    if not exts:
        return []
    out: list[Finding] = []
    last = exts[-1]
    if last in policy.blocked:
        out.append(Finding(BLOCKED, where, f"blocked extension .{last}", block=True))
        if len(exts) >= 2 and exts[-2] in _DECOY:
            out.append(Finding(DOUBLE_EXT, where, f"double extension .{exts[-2]}.{last}"))
    if last in policy.macro:
        out.append(Finding(MACRO, where, f"macro-enabled Office extension .{last}"))
    return out


def _by_type(name: str, detected: str | None, where: str, policy: Policy) -> list[Finding]:
    if detected is None:
        return []
    exts = extensions(name)
    if exts and exts[-1] in policy.blocked:
        return []  # already refused by its name
    if detected in policy.blocked:
        return [Finding(BLOCKED, where, f"content is {detected} (named {clean_name(name)!r})", block=True)]
    if exts and exts[-1] not in COMPATIBLE.get(detected, frozenset({exts[-1]})):
        return [Finding(TYPE_MISMATCH, where, f"named .{exts[-1]} but content is {detected}")]
    return []


def _member(m: Member, policy: Policy) -> list[Finding]:
    out = [Finding(f.symbol, m.path, f"{f.detail} in archive", f.block) for f in _by_name(m.name, m.path, policy)]
    out += [Finding(f.symbol, m.path, f"{f.detail} in archive", f.block)
            for f in _by_type(m.name, m.detected, m.path, policy)]
    if m.encrypted:
        out.append(Finding(ENCRYPTED, m.path, "password-protected archive member"))
    return out


_PROBLEM_SYMBOL = {"bomb": ARCHIVE_BOMB, "malformed": ARCHIVE_MALFORMED, "limit": ARCHIVE_LIMIT}


def _file(part: FilePart, policy: Policy) -> list[Finding]:
    out: list[Finding] = []
    names = part.names or ("",)
    for name in names:
        out += _by_name(name, name, policy)
    detected = sniff(part.data)
    out += _by_type(names[0], detected, part.label, policy)
    if detected == "ole" and ole_has_vba(part.data):
        out.append(Finding(MACRO, part.label, "Office document with a VBA project"))
    if policy.scan_archives and detected in ARCHIVE_KINDS:
        listing = list_archive(part.data, detected, part.label, policy.archive)
        for m in listing.members:
            out += _member(m, policy)
        out += [Finding(MACRO, p, "Office document with a VBA project") for p in listing.macros]
        out += [Finding(_PROBLEM_SYMBOL[k], part.label, d) for k, d in listing.problems]
    return out


def evaluate(w: Walk, policy: Policy) -> list[Finding]:
    findings = [Finding(MIME_LIMIT, "(message)", f"{limit} reached") for limit in w.limits]
    for part in w.files:
        findings += _file(part, policy)
    seen: set[tuple[str, str]] = set()
    unique = []
    for f in findings:  # one finding per rule and file, in message order
        if (f.symbol, f.file) not in seen:
            seen.add((f.symbol, f.file))
            unique.append(f)
    return unique


def inspect_message(raw: bytes, policy: Policy) -> list[Finding]:
    return evaluate(walk(raw, policy.mime), policy)
