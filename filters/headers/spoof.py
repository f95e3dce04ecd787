"""Identity forgery checks on the headers a human reads: pure functions, parsed headers in, hits out."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import getaddresses

from spamgate.filters.headers.checks import Hit, ParsedHeaders

__all__ = ["SpoofFacts", "display_name_hits", "from_addresses", "received_hits", "spoof_hits"]

_EMAIL_IN_TEXT = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
_RECEIVED_BY = re.compile(r"\bby\s+\[?([^\s;()\]]+)", re.IGNORECASE)


@dataclass(frozen=True)
class SpoofFacts:
    """What the spoof checks need besides the headers."""

    authenticated: bool
    is_local: Callable[[str | None], bool]
    protected_names: Sequence[str] = ()
    our_hosts: Sequence[str] = ()
    max_received: int = 30


def _decode(text: str) -> str:
    """Undo RFC 2047 encoded-words: impersonators hide the display name in them."""
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeDecodeError):
        return text


def from_addresses(parsed: ParsedHeaders) -> list[tuple[str, str]]:
    """(display name, lower-cased address) for every mailbox in every From header."""
    values = parsed.get_all("from")
    return [(_decode(n).strip(), a.strip().lower()) for n, a in getaddresses(values) if a]


def _domain(addr: str) -> str | None:
    return addr.rsplit("@", 1)[1].strip(".").lower() if "@" in addr else None


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w@.]+", " ", text.casefold()).split())


def display_name_hits(
    name: str, addr: str, is_local: Callable[[str | None], bool], protected: Sequence[str]
) -> list[Hit]:
    hits: list[Hit] = []
    for claimed in _EMAIL_IN_TEXT.findall(name):
        if claimed.lower() != addr:
            hits.append(Hit("DISPLAY_NAME_ADDRESS_MISMATCH", f"{claimed!r} shown, <{addr}> sent"))
            break
    if protected and not is_local(_domain(addr)):
        shown = f" {_norm(name)} "
        for pname in protected:
            if f" {_norm(pname)} " in shown:
                hits.append(Hit("DISPLAY_NAME_PROTECTED", f"{pname!r} from <{addr}>"))
                break
    return hits


def received_hits(parsed: ParsedHeaders, facts: SpoofFacts) -> list[Hit]:
    received = parsed.get_all("received")
    hits: list[Hit] = []
    if len(received) > facts.max_received:
        hits.append(Hit("RECEIVED_TOO_MANY", f"{len(received)} hops"))
    # Only the topmost line: it was written by the client talking to us (or forged by it),
    # and that client is not one of our hosts. Deeper lines by our hosts are normal when
    # mail we sent comes back, e.g. a local user's post echoed by an external list.
    if received and not facts.authenticated and facts.our_hosts:
        m = _RECEIVED_BY.search(received[0])
        ours = {h.lower().rstrip(".") for h in facts.our_hosts}
        if m and m.group(1).lower().rstrip(".") in ours:
            hits.append(Hit("RECEIVED_FORGED_LOCAL", f"top Received claims 'by {m.group(1)}'"))
    return hits


def spoof_hits(parsed: ParsedHeaders, facts: SpoofFacts) -> list[Hit]:
    hits: list[Hit] = []
    senders = from_addresses(parsed)
    local_from = [a for _, a in senders if facts.is_local(_domain(a))]
    if local_from and not facts.authenticated:
        hits.append(Hit("FROM_LOCAL_UNAUTH", f"<{local_from[0]}> without login"))
    for name, addr in senders:
        found = display_name_hits(name, addr, facts.is_local, facts.protected_names)
        if found:
            hits.extend(found)
            break
    if local_from:
        for _, reply_to in getaddresses(parsed.get_all("reply-to")):
            dom = _domain(reply_to.strip())
            if dom and not facts.is_local(dom):
                hits.append(Hit("REPLYTO_FOREIGN_LOCAL_FROM", f"Reply-To <{reply_to}> on From <{local_from[0]}>"))
                break
    hits.extend(received_hits(parsed, facts))
    return hits
