"""Signed, expiring one-message release links for quarantine digests.

A token names one quarantined message and one recipient, and when it stops working:
``<payload>.<mac>``, both base64url, the MAC an HMAC-SHA256 over the payload with a
32-byte key kept in the state directory (``digest.key``, created 0600 on first use).
Replay after a release is refused by the quarantine itself: once released to that
recipient, the message no longer waits for them (see Quarantine.drop_recipient).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from spamgate.proxy.errors import ToolError

__all__ = ["LinkKey", "ReleaseLink", "TokenError"]

KEY_FILE = "digest.key"


class TokenError(ToolError):
    """The link is malformed, tampered with or expired (the message says which)."""


@dataclass(frozen=True)
class ReleaseLink:
    qid: str
    rcpt: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkKey:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("release link key must be at least 32 bytes")
        self._key = key

    @classmethod
    def load(cls, state_dir: str | Path, create: bool = True) -> LinkKey:
        """The key in ``state_dir/digest.key``; made (0600, never overwritten) when missing."""
        path = Path(state_dir) / KEY_FILE
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first: use theirs
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(secrets.token_bytes(32))
                    fh.flush()
                    os.fsync(fh.fileno())
        return cls(path.read_bytes())

    def _mac(self, purpose: str, data: bytes) -> str:
        return _b64(hmac.new(self._key, purpose.encode() + b"\0" + data, hashlib.sha256).digest())

    def sign(self, qid: str, rcpt: str, expires: float) -> str:
        payload = json.dumps({"i": qid, "r": rcpt, "e": int(expires)}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._mac('release', payload)}"

    def verify(self, token: str, now: float | None = None) -> ReleaseLink:
        body, sep, mac = token.partition(".")
        try:
            payload = _unb64(body)
        except ValueError:
            raise TokenError("malformed link") from None
        if not sep or not hmac.compare_digest(mac, self._mac("release", payload)):
            raise TokenError("link signature does not match (tampered or from another server)")
        try:
            data = json.loads(payload)
            link = ReleaseLink(str(data["i"]), str(data["r"]), float(data["e"]))
        except (ValueError, KeyError, TypeError):
            raise TokenError("malformed link") from None
        if link.expires <= (time.time() if now is None else now):
            raise TokenError("link expired")
        return link

    def form_token(self, token: str) -> str:
        """The CSRF value of a release link's confirmation form: only this server can make it."""
        return self._mac("form", token.encode())
