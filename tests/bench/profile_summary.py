#!/usr/bin/env python3
"""Where the time goes, from a py-spy raw (collapsed stacks) profile: `bench.py --profile DIR` writes
DIR/production.txt; this prints the top functions by self and by inclusive samples, and the share
of each suspect from issue 15 (a suspect is matched by a substring of a frame).

usage: profile_summary.py DIR/production.txt [TOP=25]
"""

from __future__ import annotations

import sys
from collections import Counter

SUSPECTS = {
    "prometheus-client (labels/inc/observe)": ["prometheus_client"],
    "logging (format + write)": ["logging/__init__.py", "logging/handlers.py"],
    "DNS (dnspython: reverse + forward lookups)": ["dns/"],
    "aiosmtpd (command parsing/dispatch)": ["aiosmtpd/smtp.py"],
    "aiosmtplib (backend client)": ["aiosmtplib/"],
    "DATA path (spamgate message/smtp reading)": ["proxy/message.py", "_read_data", "smtp_data"],
    "asyncio event loop + transports": ["asyncio/"],
    "ssl": ["ssl.py"],
    "email package": ["email/"],
}


def main() -> None:
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    suspect: Counter[str] = Counter()
    total = 0
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        self_c[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
        for name, pats in SUSPECTS.items():
            if any(p in f for f in frames for p in pats):
                suspect[name] += count
    print(f"{total} samples\n\nsuspects (inclusive share; they overlap):")
    for name, c in suspect.most_common():
        print(f"  {100 * c / total:5.1f}%  {name}")
    print(f"\ntop {top} by self samples:")
    for f, c in self_c.most_common(top):
        print(f"  {100 * c / total:5.1f}%  {f}")
    print(f"\ntop {top} by inclusive samples:")
    for f, c in incl.most_common(top):
        print(f"  {100 * c / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
