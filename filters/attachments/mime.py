"""Walk a message's MIME tree (stdlib email parser) and collect its file parts, within limits.

The walk is explicit (not ``Message.walk()``) so depth can be bounded; parts past
``max_parts`` or ``max_depth`` and bytes past ``max_decoded_size`` are not looked at,
and each limit reached is reported once, for a symbol. Every name a part is known by
is kept: the RFC 2231 ``filename*``, an RFC 2047 encoded-word ``filename``/``name``
(``email.policy.default`` decodes both), so a name hidden in either is seen.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message

__all__ = ["FilePart", "MimeLimits", "Walk", "walk"]


@dataclass(frozen=True)
class MimeLimits:
    max_depth: int = 20
    max_parts: int = 500
    max_decoded_size: int = 50 * 1024 * 1024


@dataclass(frozen=True)
class FilePart:
    names: tuple[str, ...]  # every distinct name the part declares (may be empty)
    content_type: str
    data: bytes

    @property
    def label(self) -> str:
        return self.names[0] if self.names else f"({self.content_type} part)"


@dataclass
class Walk:
    files: list[FilePart] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)  # "max_depth", ... (each at most once)
    defects: list[str] = field(default_factory=list)
    parts: int = 0
    decoded: int = 0

    def hit(self, limit: str) -> None:
        if limit not in self.limits:
            self.limits.append(limit)


def _names(part: Message) -> tuple[str, ...]:
    found: list[str] = []
    getters: tuple[Callable[[], object], ...] = (part.get_filename, lambda: part.get_param("name"))
    for getter in getters:
        try:
            value = getter()
        except Exception:  # a malformed parameter must not hide the other name
            continue
        if isinstance(value, tuple):  # an undecoded RFC 2231 triple (compat paths)
            value = email.utils.collapse_rfc2231_value(value)
        if isinstance(value, str) and value.strip() and value.strip() not in found:
            found.append(value.strip())
    return tuple(found)


def _is_file(part: Message, names: tuple[str, ...]) -> bool:
    if names:
        return True
    disposition = (part.get_content_disposition() or "").lower()
    maintype = part.get_content_maintype()
    return disposition == "attachment" or maintype in ("application", "image", "audio", "video", "model")


def walk(raw: bytes, limits: MimeLimits) -> Walk:
    out = Walk()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    _visit(msg, 0, limits, out)
    return out


def _visit(part: Message, depth: int, limits: MimeLimits, out: Walk) -> None:
    if out.parts >= limits.max_parts:
        out.hit("max_parts")
        return
    if depth > limits.max_depth:
        out.hit("max_depth")
        return
    out.parts += 1
    out.defects.extend(type(d).__name__ for d in part.defects)
    if part.is_multipart():
        payload = part.get_payload()
        for child in payload if isinstance(payload, list) else []:
            if isinstance(child, Message):
                _visit(child, depth + 1, limits, out)
        return
    names = _names(part)
    if not _is_file(part, names):
        return
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return
    if out.decoded + len(data) > limits.max_decoded_size:
        out.hit("max_decoded_size")
        return
    out.decoded += len(data)
    out.files.append(FilePart(names, part.get_content_type(), data))
