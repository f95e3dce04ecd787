"""`tests/bench/bench_dnsbl.py` still works: one tiny run (NSD and its 5 test lists in
`unshare --net`, a 5 ms relay) writes a well-formed table. Only its shape and the query counts
are checked, never a speed: "a new client costs 5 queries, a repeated one none" is what the
rbl filter and the shared cache do, counted by NSD itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tests" / "bench" / "bench_dnsbl.py"


def test_dnsbl_benchmark_writes_a_table_with_query_counts(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "the benchmark needs root for `unshare --net` (CI runs as root)"
    md = tmp_path / "dnsbl.md"
    res = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--delay-ms", "5", "--markdown", str(md)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    lines = md.read_text().splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| check |"))
    assert [c.strip() for c in lines[head].strip("|").split("|")] == [
        "check", "wall ms, NSD on loopback", "client CPU ms", "wall ms, NSD behind a 5 ms relay",
        "queries sent (spamgate)", "queries NSD answered",
    ]  # fmt: skip
    rows = {}
    for ln in lines[head + 2 :]:
        if not ln.startswith("| "):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == 6, ln
        assert all(float(c) >= 0 for c in cells[1:4]), ln
        rows[cells[0]] = (cells[4], cells[5])
    assert len(rows) == 10, rows
    for label, (sent, answered) in rows.items():
        want = "1" if "1 list" in label or "TXT" in label else "0" if "again" in label else "5"
        assert (sent, answered) == (want, want), label
    assert "5 lists vs 1 list" in res.stdout
