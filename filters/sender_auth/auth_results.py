"""From SPF/DKIM/DMARC/ARC outcomes to symbols and one RFC 8601 Authentication-Results value (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from spamgate.filters.sender_auth.dkim_check import DkimVerification
from spamgate.filters.sender_auth.dmarc import DmarcResult
from spamgate.filters.services.spf import SpfResult

__all__ = ["DEFAULT_SCORES", "AuthOutcome", "auth_results_value", "outcome_symbols", "submission_results_value"]

_SPF = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
DEFAULT_SCORES: dict[str, float] = {
    **{f"SPF_{r.upper()}": 0.0 for r in _SPF},
    **{f"SPF_HELO_{r.upper()}": 0.0 for r in _SPF},
    "SPF_FAIL": 2.0,
    "SPF_SOFTFAIL": 1.0,
    "SPF_PERMERROR": 0.5,
    "SPF_HELO_FAIL": 1.0,
    "SPF_HELO_SOFTFAIL": 0.5,
    "DKIM_VALID": 0.0,
    "DKIM_INVALID": 1.0,
    "DKIM_TEMPERROR": 0.0,
    "DKIM_PERMERROR": 0.5,
    "DKIM_WEAK_KEY": 0.5,
    "DKIM_NONE": 0.0,
    "DMARC_PASS": 0.0,
    "DMARC_REJECT": 10.0,
    "DMARC_QUARANTINE": 8.0,
    "DMARC_POLICY_NONE": 1.0,
    "DMARC_NONE": 0.0,
    "DMARC_TEMPERROR": 0.0,
    "DMARC_PERMERROR": 0.0,
    "ARC_PASS": 0.0,
    "ARC_FAIL": 0.5,
    "DKIM_SIGNED": 0.0,
}
_DKIM_SYMBOL = {
    "pass": "DKIM_VALID",
    "fail": "DKIM_INVALID",
    "neutral": "DKIM_PERMERROR",
    "temperror": "DKIM_TEMPERROR",
    "permerror": "DKIM_PERMERROR",
    "policy": "DKIM_WEAK_KEY",
}
_DMARC_FAIL_SYMBOL = {"reject": "DMARC_REJECT", "quarantine": "DMARC_QUARANTINE", "none": "DMARC_POLICY_NONE"}
# RFC 8601 section 2.2: a value that is not a token must be a quoted-string.
_TOKEN = re.compile(r"^[^\s()<>,;:\\\"\[\]?=]+$")


@dataclass(frozen=True)
class AuthOutcome:
    spf: SpfResult | None = None
    spf_helo: SpfResult | None = None
    dkim: DkimVerification | None = None
    dmarc: DmarcResult | None = None


def outcome_symbols(o: AuthOutcome) -> list[tuple[str, str]]:
    """(symbol, detail) pairs, one per distinct result."""
    out: list[tuple[str, str]] = []
    if o.spf is not None:
        out.append((f"SPF_{o.spf.result.upper()}", f"{o.spf.domain}: {o.spf.explanation}"[:120]))
    if o.spf_helo is not None:
        out.append((f"SPF_HELO_{o.spf_helo.result.upper()}", f"{o.spf_helo.domain}: {o.spf_helo.explanation}"[:120]))
    if o.dkim is not None:
        if not o.dkim.signatures:
            out.append(("DKIM_NONE", "no signature"))
        seen: set[str] = set()
        for sig in o.dkim.signatures:
            sym = _DKIM_SYMBOL[sig.result]
            if sym not in seen:
                seen.add(sym)
                out.append((sym, f"d={sig.domain} s={sig.selector} {sig.detail}".strip()[:120]))
        if o.dkim.arc != "none":
            out.append((f"ARC_{o.dkim.arc.upper()}", o.dkim.arc_detail))
    if o.dmarc is not None:
        d = o.dmarc
        if d.result == "fail" and d.policy is not None:
            out.append((_DMARC_FAIL_SYMBOL[d.policy], f"{d.from_domain} p={d.published}"))
        else:
            out.append((f"DMARC_{d.result.upper()}", f"{d.from_domain} {d.detail}".strip()))
    return out


def _value(v: str) -> str:
    if _TOKEN.match(v) or re.match(r"^[^\s\"\\;()]*@[^\s\"\\;()@]+$", v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    clean = re.sub(r"[()\\\r\n]", " ", text).strip()
    return f" ({clean[:80]})" if clean else ""


def auth_results_value(authserv_id: str, o: AuthOutcome, mail_from: str | None) -> str:
    """The folded header value; RFC 8601 wants one resinfo per method result."""
    parts: list[str] = []
    if o.spf is not None:
        who = (mail_from or "").strip("<>") or f"postmaster@{o.spf.domain}"
        parts.append(f"spf={o.spf.result} smtp.mailfrom={_value(who)}")
    if o.spf_helo is not None and o.spf_helo.domain:
        parts.append(f"spf={o.spf_helo.result} smtp.helo={_value(o.spf_helo.domain)}")
    if o.dkim is not None:
        if not o.dkim.signatures:
            parts.append("dkim=none")
        for sig in o.dkim.signatures:
            res = "neutral" if sig.result == "policy" else sig.result
            text = f"dkim={res}{_comment(sig.detail if res != 'pass' else '')}"
            if sig.domain:
                text += f" header.d={_value(sig.domain)} header.s={_value(sig.selector)}"
            if sig.algorithm:
                text += f" header.a={_value(sig.algorithm)}"
            if sig.b:
                text += f" header.b={_value(sig.b)}"
            parts.append(text)
    if o.dmarc is not None:
        d = o.dmarc
        text = f"dmarc={d.result}"
        if d.published:
            text += f" (p={d.published})"
        if d.from_domain:
            text += f" header.from={_value(d.from_domain)}"
        parts.append(text)
    if o.dkim is not None:
        parts.append(f"arc={o.dkim.arc}")
    if not parts:
        return f"{authserv_id}; none"
    return f"{authserv_id};\r\n\t" + ";\r\n\t".join(parts)


def submission_results_value(authserv_id: str, user: str) -> str:
    """For mail from a logged-in user: RFC 8601's ``auth`` method says who."""
    return f"{authserv_id}; auth=pass smtp.auth={_value(user)}"
