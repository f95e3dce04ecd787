"""``spamgate dkim keygen DOMAIN SELECTOR``: a DKIM key pair and the DNS TXT record to publish.

The private key is written (mode 0600, never over an existing file unless --force)
as PEM: PKCS#1 for RSA, PKCS#8 for Ed25519; the ``sender_auth`` filter reads both.
The record goes to stdout in zone-file syntax, its key split into <=255-octet strings
(RFC 1035 character-strings) so it pastes into any zone.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = ["dns_record", "generate", "public_txt", "register", "run"]

_CHUNK = 250


def generate(algorithm: str = "rsa", bits: int = 2048) -> tuple[bytes, str]:
    """(private key PEM, TXT record value ``v=DKIM1; k=...; p=...``)."""
    if algorithm == "rsa":
        if not 1024 <= bits <= 8192:
            raise ValueError("RSA keys need 1024 to 8192 bits (RFC 8301; 2048 recommended)")
        rkey = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = rkey.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        return pem, public_txt(rkey)
    if algorithm == "ed25519":
        ekey = ed25519.Ed25519PrivateKey.generate()
        pem = ekey.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pem, public_txt(ekey)
    raise ValueError(f"unknown algorithm {algorithm!r} (rsa or ed25519)")


def public_txt(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    """The selector record for ``key``: RSA as SubjectPublicKeyInfo (RFC 6376), Ed25519 raw (RFC 8463)."""
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def dns_record(domain: str, selector: str, txt: str, ttl: int | None = None) -> str:
    """One zone-file line: ``sel._domainkey.example.edu. IN TXT ( "..." "..." )``."""
    chunks = [txt[i : i + _CHUNK] for i in range(0, len(txt), _CHUNK)]
    strings = " ".join(f'"{c}"' for c in chunks)
    ttl_text = f"{ttl} " if ttl is not None else ""
    return f"{selector}._domainkey.{domain.rstrip('.')}. {ttl_text}IN TXT ( {strings} )"


def _write_private(path: Path, pem: bytes, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def run(args: argparse.Namespace) -> int:
    domain = args.domain.lower().rstrip(".")
    if "." not in domain or any(c in domain for c in " /;\"") or not args.selector.strip():
        print(f"spamgate dkim keygen: invalid domain or selector: {args.domain!r} {args.selector!r}", file=sys.stderr)
        return 2
    path = Path(args.key) if args.key else Path(args.out_dir) / f"{domain}.{args.selector}.key"
    try:
        pem, txt = generate(args.algorithm, args.bits)
        _write_private(path, pem, args.force)
    except ValueError as exc:
        print(f"spamgate dkim keygen: {exc}", file=sys.stderr)
        return 2
    except FileExistsError:
        print(f"spamgate dkim keygen: {path} exists (use --force to replace it)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"spamgate dkim keygen: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"; private key: {path} (keep it secret). In spamgate.toml:")
    print(f';   [filters.sender_auth.signing_domains."{domain}"]')
    print(f';   selector = "{args.selector}"')
    print(f';   key_file = "{path.resolve()}"')
    print("; publish this record in the zone of " + domain + ":")
    print(dns_record(domain, args.selector, txt))
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    dkim = sub.add_parser("dkim", help="DKIM tools (key generation)")
    dsub = dkim.add_subparsers(dest="dkim_command", metavar="COMMAND", required=True)
    k = dsub.add_parser("keygen", help="make a signing key and print the DNS TXT record to publish")
    k.add_argument("domain", metavar="DOMAIN", help="the signing domain (d=), e.g. example.edu")
    k.add_argument("selector", metavar="SELECTOR", help="the selector (s=), e.g. 2024a")
    where = k.add_mutually_exclusive_group()
    where.add_argument("--out-dir", default=".", metavar="DIR", help="write DIR/DOMAIN.SELECTOR.key (default: .)")
    where.add_argument("--key", metavar="FILE", help="write the private key to FILE")
    k.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa",
                   help="rsa (default; every verifier knows it) or ed25519 (RFC 8463; sign with both to be safe)")
    k.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    k.add_argument("--force", action="store_true", help="replace an existing key file")
    k.set_defaults(func=run)
