"""What the backend is told about the real client: XCLIENT/XFORWARD attributes (Postfix's XCLIENT_README)."""

from __future__ import annotations

import functools

from spamgate.proxy.backend import ClientFacts

__all__ = ["identity", "xclient_addr", "xforward_args", "xtext"]

_XTEXT_SAFE = {c for c in range(33, 127) if c not in (ord("+"), ord("="))}


@functools.lru_cache(maxsize=4096)
def xtext(value: str) -> str:
    """RFC 3461 xtext, as XCLIENT/XFORWARD attribute values need."""
    return "".join(chr(b) if b in _XTEXT_SAFE else f"+{b:02X}" for b in value.encode("utf-8"))


def xclient_addr(addr: str) -> str:
    return f"IPv6:{addr}" if ":" in addr else addr


def xforward_args(client: ClientFacts) -> bytes:
    """XFORWARD's arguments, for a backend that offers XFORWARD but not XCLIENT."""
    return (f"NAME={xtext(client.xclient_name)} ADDR={xtext(xclient_addr(client.addr))} PROTO={client.proto} "
            f"HELO={xtext(client.helo or '[UNAVAILABLE]')}").encode()


def identity(client: ClientFacts, offered: frozenset[str]) -> tuple[bytes, str | None, bytes]:
    """XCLIENT's arguments, the EHLO name after it, and both as one key: what the backend knows.

    Only the attributes the backend ``offered`` are sent (an unknown one is a 501); none offered
    (a bare ``XCLIENT``) means all of them.
    """
    wanted = (
        ("ADDR", xclient_addr(client.addr)),
        ("NAME", client.xclient_name),
        ("REVERSE_NAME", client.reverse_name or client.xclient_name),
        ("HELO", client.helo or "[UNAVAILABLE]"),
        ("PROTO", client.proto),
        ("PORT", str(client.port) if client.port else None),
        ("LOGIN", client.login),
    )
    return _identity(tuple((k, v) for k, v in wanted if v is not None and (not offered or k in offered)), client.helo)


@functools.lru_cache(maxsize=1024)
def _identity(attributes: tuple[tuple[str, str], ...], client_helo: str | None) -> tuple[bytes, str | None, bytes]:
    # Cached by what is actually sent: asked twice per transaction (to pick a pooled connection, then
    # to compare), mostly for the same few clients. Keyed by the client's port only when the backend
    # takes PORT: smtp-sink doesn't, and a new port per connection would miss every time.
    args = " ".join(f"{k}={xtext(v)}" for k, v in attributes).encode()
    # The EHLO after XCLIENT sets the HELO name Postfix logs and checks: the client's, not ours.
    helo = client_helo if client_helo and client_helo.isascii() else None
    return args, helo, args + b"\nEHLO " + (helo or "").encode()
