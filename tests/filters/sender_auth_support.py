"""Test helpers for sender_auth: an in-memory resolver and messages signed with fresh keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from spamgate.filters.sdk.api import DnsSettings
from spamgate.filters.sender_auth.dkim_sign import SigningKey, load_signing_key, sign_message
from spamgate.filters.services.auth_dns import AuthDns, DnsTempError, QType, Record
from spamgate.proxy.tools.dkim_keygen import generate

__all__ = ["FakeDns", "make_key", "signed"]

Zone = Mapping[tuple[str, str], Sequence[Record] | DnsTempError]


class FakeDns(AuthDns):
    """Answers from a dict {(name, qtype): records or DnsTempError}; anything else is NXDOMAIN."""

    def __init__(self, zone: Zone) -> None:
        self.settings = DnsSettings(timeout=1.0, attempts=1)
        self.zone = {(n.lower().rstrip("."), t): v for (n, t), v in zone.items()}
        self.queries: list[tuple[str, str]] = []

    async def query(self, name: str, qtype: QType) -> list[Record]:
        key = (name.lower().rstrip("."), qtype)
        self.queries.append(key)
        answer = self.zone.get(key, [])
        if isinstance(answer, DnsTempError):
            raise answer
        return list(answer)


def make_key(tmp: Path, domain: str, selector: str, algorithm: str = "rsa") -> tuple[SigningKey, str]:
    """A fresh key pair: the loaded signing key and its TXT record value."""
    pem, txt = generate(algorithm, 1024 if algorithm == "rsa" else 0)
    path = tmp / f"{domain}.{selector}.{algorithm}.key"
    path.write_bytes(pem)
    return load_signing_key(domain, selector, path), txt


def signed(raw: bytes, key: SigningKey) -> bytes:
    """``raw`` with a DKIM-Signature on top, as a remote signer would send it."""
    return f"DKIM-Signature: {sign_message(raw, key)}\r\n".encode() + raw
