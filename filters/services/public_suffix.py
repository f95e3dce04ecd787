"""Organizational domains (RFC 7489 section 3.2) from the Public Suffix List.

Debian ships the list in the ``publicsuffix`` package; without it we fall back to
PSL's default rule ("*": the last label is the suffix), which is right for
``example.com`` and wrong for ``example.co.uk``, so the filter logs a warning.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DEFAULT_PSL_PATH", "PublicSuffixList", "load_psl"]

DEFAULT_PSL_PATH = "/usr/share/publicsuffix/public_suffix_list.dat"
log = logging.getLogger("spamgate.filters.public_suffix")


class PublicSuffixList:
    def __init__(self, rules: Iterable[str]) -> None:
        self.rules: set[str] = set()
        self.exceptions: set[str] = set()
        for line in rules:
            rule = line.strip().split()[0].lower() if line.strip() else ""
            if not rule or rule.startswith("//"):
                continue
            if rule.startswith("!"):
                self.exceptions.add(rule[1:])
            else:
                self.rules.add(rule)

    def suffix_labels(self, labels: list[str]) -> int:
        """How many trailing labels of ``labels`` form the public suffix."""
        for i in range(len(labels)):
            cand = labels[i:]
            name = ".".join(cand)
            if name in self.exceptions:
                return len(cand) - 1
            if name in self.rules:
                return len(cand)
            if len(cand) > 1 and ".".join(["*", *cand[1:]]) in self.rules:
                return len(cand)
        return 1

    def org_domain(self, domain: str) -> str:
        """The registered domain: one label below the public suffix (or the name itself)."""
        labels = [part for part in domain.lower().rstrip(".").split(".") if part]
        if not labels:
            return ""
        n = self.suffix_labels(labels)
        return ".".join(labels[-(n + 1) :]) if len(labels) > n else ".".join(labels)


@functools.lru_cache(maxsize=4)
def load_psl(path: str | None = DEFAULT_PSL_PATH) -> PublicSuffixList:
    if path is None:
        return PublicSuffixList(())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("public suffix list %s unreadable (%s): org domains use the last two labels", path, exc)
        return PublicSuffixList(())
    return PublicSuffixList(text.splitlines())
