"""Helpers for filters that keep state in the shared store (greylist, ratelimit).

Keys never hold a raw address: ``digest()`` hashes the parts, so a Redis dump shows no
mail addresses and keys stay short whatever the input.
"""

from __future__ import annotations

import hashlib
import ipaddress

from spamgate.filters.sdk.api import FilterEnv
from spamgate.filters.sdk.options import client_address
from spamgate.filters.sdk.state import MemoryStore, StateStore

__all__ = ["client_network", "digest", "env_store"]


def client_network(ip: str, v4_prefix: int = 24, v6_prefix: int = 64) -> str | None:
    """The network a client address belongs to (``192.0.2.0/24``), None if ``ip`` is no IP address.

    IPv4-mapped IPv6 addresses count as IPv4: a dual-stack listener must not split a client in two.
    """
    addr = client_address(ip)
    if addr is None:
        return None
    prefix = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def digest(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


def env_store(env: FilterEnv) -> StateStore:
    """The engine's shared store (``FilterEnv.state``), or a private in-memory one.

    The private store keeps a filter working on an engine that hands out no store; it is
    per filter instance, so it is not shared with other filters and a reload starts empty.
    """
    store = getattr(env, "state", None)
    if isinstance(store, StateStore):
        return store
    return MemoryStore()
