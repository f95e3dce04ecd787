"""Where a session's client address comes from: the TCP peer, or the PROXY header of a trusted balancer."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from spamgate.filters.sdk.options import IPNetwork, client_address
from spamgate.proxy import metrics
from spamgate.proxy.proxy_protocol import ProxyHeaderError, read_proxy_header

if TYPE_CHECKING:
    from spamgate.proxy.smtp import GateSMTP

__all__ = ["PROXY_HEADER_TIMEOUT", "AddressSource", "in_networks", "proxy_header_peer", "socket_peer"]

log = logging.getLogger("spamgate.smtp")

AddressSource = Callable[["GateSMTP"], Awaitable["tuple[str, int] | None"]]
"""Where a session's client address comes from; None ends the connection quietly (not a session)."""


async def socket_peer(gate: GateSMTP) -> tuple[str, int] | None:
    """The default address source: the TCP peer."""
    peer = gate.transport.get_extra_info("peername") if gate.transport is not None else None
    return (str(peer[0]), int(peer[1])) if peer else ("unknown", 0)


PROXY_HEADER_TIMEOUT = 5.0  # a balancer writes its header at once; a slow one is a broken one


async def proxy_header_peer(gate: GateSMTP) -> tuple[str, int] | None:
    """The address source of a ``proxy_protocol`` listener: the client a trusted balancer names.

    Only a peer in ``trusted_proxies`` is read for a header (anyone else is a client, and a
    PROXY line from it is refused by ``smtp_PROXY``). A bad or missing header is a 421; the
    balancer's health check (connect and close, or PROXY LOCAL) is served quietly, never a
    session in the logs.
    """
    peer = await socket_peer(gate)
    assert peer is not None
    lst = gate.runtime.listener(gate.listener_label)
    if not in_networks(peer[0], lst.trusted_proxies):
        return peer
    try:
        info = await read_proxy_header(gate._reader, PROXY_HEADER_TIMEOUT)
    except ProxyHeaderError as exc:
        metrics.SESSIONS_REFUSED.labels(gate.listener_label, "proxy_header").inc()
        log.warning("proxy=%s refused: %s", peer[0], exc)
        await gate.push("421 4.7.0 Bad or missing PROXY protocol header")
        return None
    if info is None:
        log.debug("proxy=%s health check (connect and close)", peer[0])
        return None
    if info.local or info.source is None:
        log.debug("proxy=%s health check (PROXY LOCAL)", peer[0])
        gate.health_check = True
        return peer
    return info.source



def in_networks(ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    addr = client_address(ip)
    return addr is not None and any(addr in net for net in networks)
