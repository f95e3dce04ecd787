"""The ``rbl`` filter's options and the pure rules that turn a DNS answer into a listing.

Answer specs (``answers``, ``codes`` keys, ``error_answers``) are strings:

* ``"127.0.0.2"``: exactly that address;
* ``"127.0.0.2..127.0.0.11"``: an inclusive range;
* ``"127.0.0.0/24"``: a network;
* ``"&0x08"`` (or ``"&8"``): a SURBL-style bitmask, any common bit counts.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from spamgate.filters.sdk.options import FilterOptions, Networks, client_address
from spamgate.filters.services.dns import DnsAnswer

__all__ = [
    "AnswerSpec",
    "Classified",
    "ListOptions",
    "RblOptions",
    "classify",
    "reverse_ip",
]

Kind = Literal["ip", "domain", "uri"]
Result = Literal["listed", "not_listed", "error", "timeout"]
LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
_PREFIX = {"ip": "RBL_", "domain": "RHSBL_", "uri": "URIBL_"}


@dataclass(frozen=True)
class AnswerSpec:
    """One answer pattern; see the module docstring for the syntax."""

    text: str
    low: int = 0
    high: int = 0
    mask: int = 0

    @classmethod
    def parse(cls, text: str) -> AnswerSpec:
        t = text.strip()
        if t.startswith("&"):
            mask = int(t[1:], 0)
            if not 0 < mask < 2**32:
                raise ValueError(f"bitmask out of range: {text!r}")
            return cls(t, mask=mask)
        if "/" in t:
            net = ipaddress.IPv4Network(t, strict=False)
            return cls(t, int(net[0]), int(net[-1]))
        lo, sep, hi = t.partition("..")
        low = int(ipaddress.IPv4Address(lo.strip()))
        high = int(ipaddress.IPv4Address(hi.strip())) if sep else low
        if high < low:
            raise ValueError(f"empty range: {text!r}")
        return cls(t, low, high)

    def matches(self, addr: ipaddress.IPv4Address) -> bool:
        value = int(addr)
        if self.mask:
            return bool(value & self.mask)
        return self.low <= value <= self.high


def _specs(value: str | list[str] | tuple[str, ...]) -> tuple[AnswerSpec, ...]:
    items = [value] if isinstance(value, str) else value
    return tuple(v if isinstance(v, AnswerSpec) else AnswerSpec.parse(v) for v in items)


class ListOptions(FilterOptions):
    """One ``[[filters.rbl.lists]]`` entry."""

    zone: str
    kind: Kind = "ip"
    weight: float = 1.0
    name: str | None = None
    symbol: str | None = None
    answers: tuple[AnswerSpec, ...] = (AnswerSpec.parse("127.0.0.0/8"),)
    codes: dict[str, str] = Field(default_factory=dict)
    error_answers: tuple[AnswerSpec, ...] = (AnswerSpec.parse("127.255.255.252..127.255.255.255"),)
    check: tuple[Literal["helo", "mail_from", "reverse_name"], ...] = ("helo", "mail_from")
    ipv6: bool = True
    timeout: float | None = Field(default=None, gt=0)
    nameservers: tuple[str, ...] | None = None
    port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        z = v.strip().strip(".").lower()
        if not z or not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", z):
            raise ValueError(f"not a DNS zone name: {v!r}")
        return z

    @field_validator("answers", "error_answers", mode="before")
    @classmethod
    def _answers(cls, v: object) -> object:
        return _specs(v) if isinstance(v, str | list | tuple) else v

    @field_validator("codes")
    @classmethod
    def _codes(cls, v: dict[str, str]) -> dict[str, str]:
        for key, sym in v.items():
            AnswerSpec.parse(key)
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", sym):
                raise ValueError(f"symbol names are upper-case words: {sym!r}")
        return v

    @field_validator("nameservers")
    @classmethod
    def _ns(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for ns in v or ():
            ipaddress.ip_address(ns)
        return v

    @property
    def label(self) -> str:
        return self.name or self.zone

    @property
    def main_symbol(self) -> str:
        return self.symbol or _PREFIX[self.kind] + re.sub(r"[^A-Z0-9]+", "_", self.label.upper()).strip("_")

    @property
    def code_specs(self) -> tuple[tuple[AnswerSpec, str], ...]:
        return tuple((AnswerSpec.parse(k), s) for k, s in self.codes.items())

    @property
    def all_symbols(self) -> frozenset[str]:
        base = self.main_symbol
        return frozenset({base, f"{base}_ERROR", f"{base}_TIMEOUT", *self.codes.values()})


class RblOptions(FilterOptions):
    """``[filters.rbl]`` minus the engine's common keys."""

    lists: tuple[ListOptions, ...] = Field(min_length=1)
    reject_score: float | None = None
    skip_private: bool = True
    allow_networks: Networks = ()
    allow_domains: tuple[str, ...] = ()
    max_uris: int = Field(default=20, ge=0)
    exempt_recipients: tuple[str, ...] = ("postmaster",)

    @field_validator("allow_domains")
    @classmethod
    def _domains(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.strip().strip(".").lower() for d in v if d.strip())

    @field_validator("lists")
    @classmethod
    def _unique(cls, v: tuple[ListOptions, ...]) -> tuple[ListOptions, ...]:
        labels = [lst.label for lst in v]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"lists {dupes} appear twice: give each entry its own name = ...")
        return v


@dataclass(frozen=True)
class Classified:
    result: Result
    codes: tuple[str, ...] = ()
    detail: str = ""


def classify(answer: DnsAnswer, lst: ListOptions) -> Classified:
    """NXDOMAIN is 'not listed', a timeout 'unknown'; error codes are never listings."""
    if answer.status in ("nxdomain", "nodata"):
        return Classified("not_listed")
    if answer.status == "timeout":
        return Classified("timeout", detail=answer.detail)
    if answer.status == "error":
        return Classified("error", detail=answer.detail)
    addrs = []
    for rec in answer.records:
        try:
            addr = ipaddress.IPv4Address(rec)
        except ValueError:
            return Classified("error", detail=f"not an IPv4 answer: {rec}")
        if addr not in LOOPBACK_NET or any(s.matches(addr) for s in lst.error_answers):
            return Classified("error", detail=f"error answer {rec}")
        addrs.append(addr)
    codes = tuple(str(a) for a in addrs if any(s.matches(a) for s in lst.answers))
    return Classified("listed", codes) if codes else Classified("not_listed", detail="answer not counted")


def reverse_ip(ip: str) -> str | None:
    """``192.0.2.1`` -> ``1.2.0.192``; IPv6 as 32 reversed nibbles; None if not an IP."""
    addr = client_address(ip)
    if addr is None:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        return ".".join(reversed(str(addr).split(".")))
    return ".".join(reversed(addr.exploded.replace(":", "")))
