"""The console's quarantine search over 100,000 held messages: indexed plans and their cost.

Run on demand: ``.venv/bin/python -m tests.bench.bench_console_index``. Prints, per search,
SQLite's query plan verdict and the time per page query, against a baseline measured in
the same run: the same question answered by a full scan (``LIKE '%...%'`` on every row).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from spamgate.proxy.quarantine_index import QuarantineIndex, Search
from tests.proxy.console.test_quarantine_index import plan_uses_indexes

ROWS = 100_000


def _time(fn: object, repeat: int = 20) -> float:
    assert callable(fn)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        idx = QuarantineIndex(Path(d))
        now = time.time()
        t0 = time.perf_counter()
        idx.add_many(({"id": f"{i:06d}", "time": now - i, "mail_from": f"sender{i % 5000}@spam{i % 97}.example",
                       "recipients": [f"user{i % 300}@example.edu"], "score": 5.0 + i % 10, "action": "quarantine",
                       "reasons": [f"SYM_{i % 40}", "FROM_LOCAL_UNAUTH"], "size": 1000},
                      f"Offer number {i} for you") for i in range(ROWS))  # fmt: skip
        print(f"built {ROWS} rows in {time.perf_counter() - t0:.1f} s")
        con = sqlite3.connect(idx.path)

        def scan(column: str, needle: str) -> None:
            # What the page query does too: the count of all matches, then one page.
            con.execute(f"SELECT count(*) FROM msg WHERE {column} LIKE ?", (f"%{needle}%",)).fetchone()
            con.execute(f"SELECT id FROM msg WHERE {column} LIKE ? ORDER BY time DESC LIMIT 50",
                        (f"%{needle}%",)).fetchall()

        cases = [
            ("sender", Search(sender="sender42@"), lambda: scan("sender", "sender42@")),
            ("recipient", Search(recipient="user7@example.edu"), lambda: scan("recipients", "user7@example.edu")),
            ("subject", Search(subject="number 4242 for"), lambda: scan("subject", "number 4242 for")),
            ("reason", Search(reason="SYM_3"), lambda: scan("reasons", "SYM_3")),
            ("page 20", Search(offset=1000), lambda: scan("subject", "Offer")),
        ]
        print(f"{'search':<10} {'indexed plan':<13} {'page query ms':>13} {'full scan ms':>13} {'ratio':>7}")
        for name, search, baseline in cases:
            ok = plan_uses_indexes(idx.explain(search))
            t_idx = _time(lambda s=search: idx.search(s)) * 1000
            t_scan = _time(baseline) * 1000
            print(f"{name:<10} {ok!s:<13} {t_idx:>13.2f} {t_scan:>13.2f} {t_scan / t_idx:>7.1f}")
        con.close()


if __name__ == "__main__":
    main()
