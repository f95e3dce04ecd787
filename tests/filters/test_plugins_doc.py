"""docs/plugins.md cannot rot: its import block, example filter and example test are executed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def block_with(marker: str) -> str:
    [found] = [b for b in blocks() if marker in b]
    return found


async def test_documented_filter_and_test_run() -> None:
    ns: dict[str, Any] = {}
    exec(block_with("from spamgate.filters.sdk import (\n"), ns)  # the one import line of section 1
    exec(block_with("class KeywordFilter"), ns)
    exec(block_with("async def test_flags_the_word"), ns)
    await ns["test_flags_the_word"]()


def test_documented_metric_spec_is_valid() -> None:
    ns: dict[str, Any] = {}
    exec(block_with("SCANS = MetricSpec").split("class Scanner")[0], ns)
    assert ns["SCANS"].name == "spamgate_example_scans_total"
