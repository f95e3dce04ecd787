"""DMARC (RFC 7489): policy discovery, identifier alignment, the policy to apply.

Pure evaluation (``parse_record``, ``evaluate``) is separate from the two TXT lookups
(``find_record``) so every alignment and policy rule is unit-tested without DNS.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Literal

from spamgate.filters.services.auth_dns import AuthDns, DnsTempError
from spamgate.filters.services.public_suffix import PublicSuffixList
from spamgate.filters.services.spf import SpfResult

__all__ = ["DmarcRecord", "DmarcResult", "aligned", "check_dmarc", "evaluate", "find_record", "from_domain",
           "parse_record"]

Policy = Literal["none", "quarantine", "reject"]
Alignment = Literal["r", "s"]
DmarcStatus = Literal["pass", "fail", "none", "temperror", "permerror"]
_POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DmarcRecord:
    p: Policy
    sp: Policy | None = None
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100


@dataclass(frozen=True)
class DmarcResult:
    result: DmarcStatus
    from_domain: str = ""
    policy: Policy | None = None  # the policy to apply to this message (after sp= and pct=)
    published: Policy | None = None  # what the domain asked for, for the header comment
    detail: str = ""


def parse_record(txt: str) -> DmarcRecord | None:
    """A DMARC record, or None when ``txt`` is not one (RFC 7489 section 6.6.3)."""
    tags: dict[str, str] = {}
    for part in txt.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip())
    if not txt.lstrip().startswith("v") or tags.get("v") != "DMARC1":
        return None
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        # A record without a valid p= but with rua= counts as p=none (section 6.6.3).
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", "").lower()
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DmarcRecord(
        p=p,  # type: ignore[arg-type]
        sp=sp if sp in _POLICIES else None,  # type: ignore[arg-type]
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=pct,
    )


def aligned(identifier: str, author: str, mode: Alignment, psl: PublicSuffixList) -> bool:
    a, b = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return psl.org_domain(a) == psl.org_domain(b)


def evaluate(
    author: str,
    record: DmarcRecord,
    at_org_domain: bool,
    spf: SpfResult | None,
    dkim_pass_domains: Sequence[str],
    psl: PublicSuffixList,
    sample: Callable[[], float] = random.random,
) -> DmarcResult:
    spf_ok = spf is not None and spf.result == "pass" and aligned(spf.domain, author, record.aspf, psl)
    dkim_ok = any(aligned(d, author, record.adkim, psl) for d in dkim_pass_domains)
    if spf_ok or dkim_ok:
        how = "dkim" if dkim_ok else "spf"
        return DmarcResult("pass", author, None, record.p, f"aligned {how}")
    policy: Policy = record.sp if (at_org_domain and record.sp) else record.p
    published = policy
    # pct= sampling (section 6.6.4): mail outside the sample gets the next milder policy.
    if record.pct < 100 and sample() * 100 >= record.pct:
        policy = "quarantine" if policy == "reject" else "none"
    return DmarcResult("fail", author, policy, published, "no aligned SPF or DKIM pass")


async def find_record(resolver: AuthDns, author: str, psl: PublicSuffixList) -> tuple[DmarcRecord | None, bool]:
    """The record at _dmarc.<author>, else at _dmarc.<org domain>; raises DnsTempError."""
    org = psl.org_domain(author)
    for domain, at_org in ((author, False), (org, True)):
        if at_org and org == author:
            break
        records = [r for r in (parse_record(t) for t in await resolver.txt(f"_dmarc.{domain}")) if r]
        if len(records) == 1:
            return records[0], at_org
    return None, False


def from_domain(from_values: Sequence[str]) -> str | None:
    """The single RFC5322.From domain; '' when there are several (DMARC can't pick one)."""
    domains = {a.rsplit("@", 1)[1].strip().lower().rstrip(".") for _, a in getaddresses(list(from_values)) if "@" in a}
    domains.discard("")
    if not domains:
        return None
    return domains.pop() if len(domains) == 1 else ""


async def check_dmarc(
    resolver: AuthDns,
    from_values: Sequence[str],
    spf: SpfResult | None,
    dkim_pass_domains: Sequence[str],
    psl: PublicSuffixList,
    sample: Callable[[], float] = random.random,
) -> DmarcResult:
    author = from_domain(from_values)
    if author is None:
        return DmarcResult("none", detail="no From domain")
    if author == "":
        return DmarcResult("permerror", detail="several From domains")
    try:
        record, at_org = await find_record(resolver, author, psl)
    except DnsTempError as exc:
        return DmarcResult("temperror", author, detail=str(exc))
    if record is None:
        return DmarcResult("none", author, detail="no DMARC record")
    return evaluate(author, record, at_org, spf, dkim_pass_domains, psl, sample)
