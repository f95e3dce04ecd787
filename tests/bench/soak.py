"""The soak, full size (on demand): 500 concurrent clients, 20,000 messages through spamgate in
front of Postfix with the default filter set and a real spamd, faults injected on a schedule
(Postfix stopped and started, SIGHUP twice, NSD stopped, spamd killed).

    .venv/bin/python tests/bench/soak.py [--clients 500] [--messages 20000] [--no-spamd] [--no-faults]

Prints messages accepted, delivered, lost, duplicated, peak RSS and the RSS slope; exits 1 on
any lost or duplicated message. Needs root (Postfix) and the suite's Debian packages.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.hardening.soak_core import run_soak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--no-spamd", action="store_true", help="leave the spamassassin filter out")
    ap.add_argument("--no-faults", action="store_true")
    args = ap.parse_args()
    result = run_soak(clients=args.clients, messages=args.messages, with_spamd=not args.no_spamd,
                      faults=not args.no_faults, log=lambda line: print(line, flush=True))
    print(result.report())
    return 1 if result.lost or result.duplicated or result.wrongly_delivered else 0


if __name__ == "__main__":
    sys.exit(main())
