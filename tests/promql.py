"""Test helpers: the metric names a PromQL expression uses, and those spamgate defines.

Shared by the dashboard and alert tests, so that a panel or a rule cannot query a
metric that no code exports.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

from prometheus_client import REGISTRY

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2", "start", "end",
}  # fmt: skip
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (a lexical scan, good enough for our queries)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    names: set[str] = set()
    for m in _IDENT.finditer(text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def import_all_metric_modules() -> None:
    """Import the engine's metrics and every built-in filter module, registering their metrics."""
    importlib.import_module("proxy.metrics")
    import filters

    for info in pkgutil.iter_modules(filters.__path__, "filters."):
        importlib.import_module(info.name)


def defined_sample_names(prefix: str = "spamgate_") -> set[str]:
    """Every sample name the default registry can expose (counters' _total, histograms' _bucket, ...)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith(prefix):
            names.update(family.name + s for s in _SUFFIXES[family.type])
    return names


def exposition_names(text: str) -> set[str]:
    """Sample names present in a /metrics exposition."""
    names: set[str] = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
