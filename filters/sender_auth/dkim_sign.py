"""DKIM signing keys and signatures for mail from authenticated users (dkimpy).

Keys are read once at start-up in any usual form (PKCS#1 or PKCS#8 PEM for RSA,
PKCS#8 PEM or dkimpy's base64 seed for Ed25519) and converted to what dkimpy wants,
then proven usable by signing a test message, so a bad key fails at start, not on
the first message.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = ["DEFAULT_SIGN_HEADERS", "SigningKey", "load_signing_key", "sign_message"]

# What a recipient shows or threads on. Received, Authentication-Results and X-Spam-*
# stay out: the engine and later hops add them after we sign.
DEFAULT_SIGN_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
    "in-reply-to", "references", "list-id", "list-unsubscribe",
)
_TEST_MESSAGE = b"From: test@example.invalid\r\nSubject: key check\r\n\r\nkey check\r\n"


@dataclass(frozen=True)
class SigningKey:
    domain: str
    selector: str
    algorithm: bytes
    private: bytes  # in dkimpy's form: PKCS#1 PEM (RSA) or base64 seed (Ed25519)

    @property
    def algorithm_name(self) -> str:
        return self.algorithm.decode()


def _convert(data: bytes) -> tuple[bytes, bytes]:
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 1024:
                raise ValueError(f"RSA key of {key.key_size} bits is too small (RFC 8301: 1024 at least)")
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            return b"rsa-sha256", pem
        if isinstance(key, ed25519.Ed25519PrivateKey):
            seed = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            return b"ed25519-sha256", base64.b64encode(seed)
        raise ValueError(f"unsupported key type {type(key).__name__} (use RSA or Ed25519)")
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except binascii.Error:
        raise ValueError("neither a PEM private key nor a base64 Ed25519 seed") from None
    if len(seed) != 32:
        raise ValueError("a base64 Ed25519 seed must decode to 32 bytes")
    return b"ed25519-sha256", base64.b64encode(seed)


def load_signing_key(domain: str, selector: str, path: str | Path) -> SigningKey:
    """Read and check one key; raises ValueError with the reason (OSError if unreadable)."""
    algorithm, private = _convert(Path(path).read_bytes())
    key = SigningKey(domain.lower().rstrip("."), selector, algorithm, private)
    sign_message(_TEST_MESSAGE, key, ("from", "subject"))
    return key


def sign_message(raw: bytes, key: SigningKey, headers: tuple[str, ...] = DEFAULT_SIGN_HEADERS) -> str:
    """The DKIM-Signature value (folded, without the name and final CRLF) for ``raw``.

    relaxed/relaxed: later hops may re-fold headers or trim trailing blanks; simple
    canonicalisation would break on either.
    """
    try:
        line = dkim.sign(
            raw,
            key.selector.encode(),
            key.domain.encode(),
            key.private,
            signature_algorithm=key.algorithm,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[h.encode() for h in headers],
        )
    except dkim.DKIMException as exc:
        raise ValueError(f"DKIM signing failed: {exc}") from None
    prefix = b"DKIM-Signature:"
    if not line.startswith(prefix):
        raise ValueError("dkimpy returned no DKIM-Signature header")
    return bytes(line[len(prefix) :]).strip().decode("ascii")
