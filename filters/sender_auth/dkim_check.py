"""DKIM (RFC 6376, 8463) and ARC (RFC 8617) verification with dkimpy, keys fetched asynchronously.

dkimpy asks for keys through a synchronous ``dnsfunc``. We read every selector the
message names (DKIM-Signature, ARC-Seal, ARC-Message-Signature) first, fetch all
keys concurrently through our resolver, and then run dkimpy's hashing and
signature checks in a worker thread with a ``dnsfunc`` that answers from those
prefetched keys: no DNS in the thread, no CPU-heavy canonicalisation on the loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from spamgate.filters.services.auth_dns import AuthDns, DnsTempError

__all__ = ["DkimResult", "DkimVerification", "key_names", "verify_dkim", "verify_prefetched"]

DkimStatus = Literal["pass", "fail", "neutral", "temperror", "permerror", "policy"]
ArcStatus = Literal["pass", "fail", "none"]
KeyAnswer = list[str] | DnsTempError

_SIGNING_HEADERS = (b"dkim-signature", b"arc-seal", b"arc-message-signature")


@dataclass(frozen=True)
class DkimResult:
    """One DKIM-Signature's outcome; ``b`` is the start of its signature, for header.b."""

    result: DkimStatus
    domain: str = ""
    selector: str = ""
    algorithm: str = ""
    b: str = ""
    detail: str = ""


@dataclass(frozen=True)
class DkimVerification:
    signatures: tuple[DkimResult, ...]
    arc: ArcStatus = "none"
    arc_detail: str = ""

    def passing_domains(self) -> list[str]:
        return [s.domain for s in self.signatures if s.result == "pass"]


def _key_name(tags: Mapping[bytes, bytes]) -> str:
    return (tags[b"s"] + b"._domainkey." + tags[b"d"]).decode("ascii", "replace").lower().rstrip(".")


def key_names(headers: list[tuple[bytes, bytes]]) -> set[str]:
    """The key record names every signature in ``headers`` needs."""
    names = set()
    for name, value in headers:
        if name.lower() not in _SIGNING_HEADERS:
            continue
        try:
            tags = parse_tag_value(value)
            names.add(_key_name(tags))
        except (InvalidTagValueList, KeyError):
            continue
    return names


def _dnsfunc(keys: Mapping[str, KeyAnswer]) -> object:
    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).lower().rstrip(".")
        answer = keys.get(key)
        if not isinstance(answer, list) or not answer:
            return None
        # Several TXT records at one selector: prefer the one that looks like a key.
        best = next((r for r in answer if "p=" in r), answer[0])
        return best.encode("ascii", "replace")

    return lookup


def _verify_one(d: dkim.DKIM, idx: int, value: bytes, keys: Mapping[str, KeyAnswer]) -> DkimResult:
    try:
        tags = parse_tag_value(value)
        domain = tags[b"d"].decode("ascii", "replace").lower()
        selector = tags[b"s"].decode("ascii", "replace")
        algorithm = tags.get(b"a", b"").decode("ascii", "replace")
        b = re.sub(r"\s+", "", tags.get(b"b", b"").decode("ascii", "replace"))[:8]
    except (InvalidTagValueList, KeyError) as exc:
        return DkimResult("permerror", detail=f"bad signature tags: {exc}")
    base = {"domain": domain, "selector": selector, "algorithm": algorithm, "b": b}
    answer = keys.get(_key_name(tags))
    if isinstance(answer, DnsTempError):
        return DkimResult("temperror", **base, detail=str(answer))
    if not answer:
        return DkimResult("permerror", **base, detail="no key published")
    try:
        ok = d.verify(idx, dnsfunc=_dnsfunc(keys))
    except dkim.ValidationError as exc:
        if "body hash mismatch" in str(exc):
            return DkimResult("fail", **base, detail="body hash mismatch")
        return DkimResult("permerror", **base, detail=str(exc)[:120])
    except dkim.KeyFormatError as exc:
        status: DkimStatus = "policy" if "too small" in str(exc) else "permerror"
        return DkimResult(status, **base, detail=str(exc)[:120])
    except dkim.DKIMException as exc:
        return DkimResult("permerror", **base, detail=str(exc)[:120])
    if ok:
        return DkimResult("pass", **base)
    return DkimResult("fail", **base, detail="signature did not verify (or unusable key)")


def verify_prefetched(raw: bytes, keys: Mapping[str, KeyAnswer], min_key_bits: int = 1024) -> DkimVerification:
    """Verify every DKIM signature and the ARC chain against keys already fetched (CPU only)."""
    d = dkim.DKIM(raw, minkey=min_key_bits)
    sigs = [v for n, v in d.headers if n.lower() == b"dkim-signature"]
    results = tuple(_verify_one(d, i, v, keys) for i, v in enumerate(sigs))
    arc: ArcStatus = "none"
    detail = ""
    if any(n.lower() == b"arc-seal" for n, _ in d.headers):
        try:
            cv, _data, detail = dkim.ARC(raw, minkey=min_key_bits).verify(dnsfunc=_dnsfunc(keys))
        except dkim.DKIMException as exc:
            cv, detail = dkim.CV_Fail, str(exc)
        arc = "pass" if cv == dkim.CV_Pass else "fail"
    return DkimVerification(results, arc, str(detail)[:120])


async def _fetch(resolver: AuthDns, name: str) -> KeyAnswer:
    try:
        return await resolver.txt(name)
    except DnsTempError as exc:
        return exc


async def verify_dkim(resolver: AuthDns, raw: bytes, min_key_bits: int = 1024) -> DkimVerification:
    try:
        headers = dkim.DKIM(raw).headers
    except dkim.DKIMException as exc:
        return DkimVerification((DkimResult("permerror", detail=str(exc)[:120]),))
    names = sorted(key_names(headers))
    if not names and not any(n.lower() in _SIGNING_HEADERS for n, _ in headers):
        return DkimVerification(())
    answers = await asyncio.gather(*(_fetch(resolver, n) for n in names))
    keys = dict(zip(names, answers, strict=True))
    return await asyncio.to_thread(verify_prefetched, raw, keys, min_key_bits)
