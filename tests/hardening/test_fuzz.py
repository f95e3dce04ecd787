"""The fuzz target (tests/hardening/fuzz_entry.py) in CI: a short coverage-guided atheris run
from the seed corpus, and the same target driven by hypothesis. The long run is on demand
(docs/security.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hardening.fuzz_entry import check

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def test_atheris_short_run_finds_no_crash(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "fuzz_corpus", corpus)
    r = subprocess.run(
        [sys.executable, str(HERE / "fuzz_entry.py"), "-runs=1500", "-max_total_time=6",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    tail = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))[-3000:]
    assert r.returncode == 0, tail
    assert "Done " in r.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_target_under_hypothesis(data: bytes) -> None:
    check(data)


def test_seed_corpus_reaches_every_entry_point() -> None:
    selectors = {p.read_bytes()[0] % 6 for p in (HERE / "fuzz_corpus").iterdir()}
    assert selectors == set(range(6))
