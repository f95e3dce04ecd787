"""The sender-login map: which logins may use which envelope sender addresses.

The file format is Postfix's ``smtpd_sender_login_maps`` (as a plain text table)::

    # address or @domain        logins (comma and/or space separated)
    info@example.edu            alice@example.edu, bob@example.edu
    @lists.example.edu          listadmin

Lookup order for an address is the full address, then ``@domain``; keys and logins
are case-insensitive. Whatever the map says, a login may always send as its own
address (a login without ``@`` owns ``login@d`` for each local domain ``d``), which
is the default rule when there is no map at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SenderLoginMap", "load_sender_login_map", "may_send_as", "owners", "parse_sender_login_map"]


@dataclass(frozen=True)
class SenderLoginMap:
    """Parsed map: lower-cased key (address or ``@domain``) -> allowed logins."""

    entries: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)


def _bare(address: str) -> str:
    return address.strip().strip("<>").strip().lower()


def parse_sender_login_map(text: str, source: str = "<map>") -> SenderLoginMap:
    """Parse the map text; a malformed line raises ValueError naming ``source:line``."""
    entries: dict[str, frozenset[str]] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise ValueError(f"{source}:{lineno}: expected 'address logins', got {raw.strip()!r}")
        key = _bare(parts[0])
        if "@" not in key or key.endswith("@"):
            raise ValueError(f"{source}:{lineno}: key must be an address or @domain: {parts[0]!r}")
        logins = frozenset(x.lower() for x in parts[1].replace(",", " ").split())
        entries[key] = entries.get(key, frozenset()) | logins
    return SenderLoginMap(entries)


def load_sender_login_map(path: str | Path) -> SenderLoginMap:
    """Read and parse a map file (a small, synchronous read meant for start-up and reload)."""
    p = Path(path)
    return parse_sender_login_map(p.read_text(encoding="utf-8"), str(p))


def owners(address: str, sender_map: SenderLoginMap | None) -> frozenset[str]:
    """The logins the map gives ``address`` (full address first, then ``@domain``)."""
    if sender_map is None:
        return frozenset()
    addr = _bare(address)
    found = sender_map.entries.get(addr)
    if found is None and "@" in addr:
        found = sender_map.entries.get("@" + addr.rsplit("@", 1)[1])
    return found or frozenset()


def may_send_as(
    login: str,
    address: str,
    sender_map: SenderLoginMap | None,
    *,
    local_domains: Iterable[str] = (),
) -> bool:
    """True when ``login`` may use ``address`` as its envelope sender."""
    user = login.strip().lower()
    addr = _bare(address)
    if not user or not addr:
        return False
    if addr == user:
        return True
    if "@" not in user and "@" in addr:
        local, domain = addr.rsplit("@", 1)
        if local == user and domain in {d.lower().strip(".") for d in local_domains}:
            return True
    return user in owners(addr, sender_map)
