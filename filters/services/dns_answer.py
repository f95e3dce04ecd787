"""What a DNS reply says: the answer records (CNAMEs followed) and how long a "no" lasts.

Pure functions over dnspython messages, for the caching resolver (``dns``).
"""

from __future__ import annotations

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.ttl

from spamgate.filters.sdk.dns import RdType
from spamgate.filters.services.dns_udp import Question

__all__ = [
    "DEFAULT_NEGATIVE_TTL", "MAX_CNAME_CHAIN", "RDTYPES", "ChainTooLong", "answer_rrset", "negative_ttl", "records",
]

# dnspython's limit (dns.message.MAX_CHAIN): a longer CNAME chain is an error, not an answer.
MAX_CNAME_CHAIN = 16
# Used when a negative answer carries no SOA (a broken server): retry soon.
DEFAULT_NEGATIVE_TTL = 60
RDTYPES = {t: dns.rdatatype.RdataType.make(t) for t in ("A", "AAAA", "TXT", "PTR")}


def negative_ttl(response: dns.message.Message | None) -> int:
    """RFC 2308: a negative answer lives min(SOA TTL, SOA minimum)."""
    if response is None:
        return DEFAULT_NEGATIVE_TTL
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            soa = next(iter(rrset))
            return int(min(rrset.ttl, soa.minimum))
    return DEFAULT_NEGATIVE_TTL


def records(rdtype: RdType, rrset: dns.rrset.RRset) -> tuple[str, ...]:
    if rdtype == "TXT":
        return tuple(b"".join(r.strings).decode("utf-8", "replace") for r in rrset)
    if rdtype == "PTR":
        return tuple(r.target.to_text(omit_final_dot=True).lower() for r in rrset)
    return tuple(sorted(r.address for r in rrset))


class ChainTooLong(Exception):
    """More CNAMEs in a row than MAX_CNAME_CHAIN: an error, not an answer."""


def answer_rrset(response: dns.message.Message, question: Question) -> tuple[dns.rrset.RRset | None, int]:
    """The answer RRset to the question, following CNAMEs, and the lowest TTL on the way.

    dnspython's ``resolve_chaining`` does this too, and then looks for a negative TTL on every
    parent of the name; that walk cost more CPU than the whole exchange (we take it from the
    SOA, ``negative_ttl``)."""
    name, ttl = question.name, dns.ttl.MAX_TTL
    for _ in range(MAX_CNAME_CHAIN):
        cname = None
        for rrset in response.answer:
            if rrset.rdclass != dns.rdataclass.IN or rrset.name != name:
                continue
            if rrset.rdtype == question.rdtype:
                return rrset, min(ttl, rrset.ttl)
            if rrset.rdtype == dns.rdatatype.CNAME and len(rrset):
                cname = rrset
        if cname is None:
            return None, ttl
        ttl = min(ttl, cname.ttl)
        name = next(iter(cname)).target
    raise ChainTooLong
