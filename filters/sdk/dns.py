"""DNS for filters: the ``[dns]`` settings model, the answer type and the resolver protocol.

The engine owns the resolver: it builds one process-wide caching resolver per ``[dns]``
setting and hands it to filters as ``FilterEnv.resolver``, so every filter (and every
config generation) shares one cache. A filter never builds its own; a test passes a
fake that implements :class:`Resolver`.

Lookups end as values, never exceptions: ``ok``, ``nxdomain``, ``nodata``, ``timeout``
or ``error``; the filter decides what each means (an RBL: nxdomain = not listed).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spamgate.filters.sdk.options import lists_to_tuples

__all__ = ["DnsAnswer", "DnsSettings", "RdType", "Resolver", "Status"]

Status = Literal["ok", "nxdomain", "nodata", "timeout", "error"]
RdType = Literal["A", "AAAA", "TXT", "PTR"]


class DnsSettings(BaseModel):
    """``[dns]``: the resolver every DNS-using filter shares.

    ``nameservers`` empty means the system's (``/etc/resolv.conf``): the engine fills them
    in before it builds the resolver, so ``FilterEnv.dns`` always names real servers.
    The engine's config extends this model with its own keys (reverse lookups).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _arrays(cls, data: Any) -> Any:
        return lists_to_tuples(cls, data)

    nameservers: tuple[str, ...] = ()
    port: int = Field(default=53, ge=1, le=65535)
    timeout: float = Field(default=2.0, gt=0)
    attempts: int = Field(default=2, ge=1)
    cache_size: int = Field(default=10000, ge=0)

    @field_validator("nameservers")
    @classmethod
    def _ips(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for ns in v:
            ipaddress.ip_address(ns)
        return v

    @property
    def lifetime(self) -> float:
        """The longest one lookup may take: timeout x attempts."""
        return self.timeout * self.attempts


@dataclass(frozen=True)
class DnsAnswer:
    """The outcome of one lookup; ``records`` are addresses (A/AAAA), joined strings (TXT) or names (PTR)."""

    status: Status
    records: tuple[str, ...] = ()
    ttl: int = 0
    detail: str = ""

    @property
    def found(self) -> bool:
        return self.status == "ok" and bool(self.records)


@runtime_checkable
class Resolver(Protocol):
    """What ``FilterEnv.resolver`` offers (the engine's caching resolver implements it)."""

    @property
    def settings(self) -> DnsSettings: ...

    @property
    def lifetime(self) -> float: ...

    async def query(self, name: str, rdtype: RdType = "A", max_wait: float | None = None) -> DnsAnswer:
        """Look ``name`` up, waiting at most ``max_wait`` seconds (default: the lifetime)."""
        ...

    def for_servers(self, nameservers: tuple[str, ...], port: int) -> Resolver:
        """The shared resolver for other nameservers (e.g. a DNS list's own servers), same cache rules."""
        ...
