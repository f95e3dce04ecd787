"""Test helpers: the metric names a PromQL expression uses, and those spamgate defines.

Shared by the dashboard and alert tests, so that a panel or a rule cannot query a
metric that no code exports.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from spamgate.filters.sdk.metrics import MetricSpec

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
    """Import the engine's metrics and every built-in filter module, registering their metrics.

    Filters declare theirs as module-level ``MetricSpec``s and bind them through
    ``FilterEnv.metrics``; here each is bound to the engine's handle on the default registry,
    as a running spamgate does when it builds the filter.
    """
    importlib.import_module("spamgate.proxy.metrics")
    import spamgate.filters
    from spamgate.proxy.filter_metrics import FILTER_METRICS

    for info in pkgutil.walk_packages(spamgate.filters.__path__, "spamgate.filters."):
        importlib.import_module(info.name)
    for spec in _metric_specs():
        spec.bind(FILTER_METRICS)


def _metric_specs() -> list[MetricSpec]:
    return [obj for mod in list(sys.modules.values()) if mod is not None
            for obj in list(vars(mod).values()) if isinstance(obj, MetricSpec)]


def defined_sample_names(prefix: str = "spamgate_") -> set[str]:
    """Every sample name the default registry can expose (counters' _total, histograms' _bucket, ...)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith(prefix):
            names.update(family.name + s for s in _SUFFIXES[family.type])
    return names


def defined_label_names(prefix: str = "spamgate_") -> dict[str, set[str]]:
    """Label names by sample name, read from the metric objects of every imported module."""
    out: dict[str, set[str]] = {}
    kinds = {"Counter": "counter", "Histogram": "histogram", "Gauge": "gauge", "Info": "info", "Summary": "summary",
             "Enum": "enum"}  # fmt: skip
    for mod in list(sys.modules.values()):
        for obj in list(vars(mod).values()) if mod is not None else []:
            if not isinstance(obj, MetricWrapperBase):
                continue
            name: str = obj._name
            if not name.startswith(prefix):
                continue
            kind = kinds.get(type(obj).__name__, "unknown")
            labels = set(obj._labelnames)
            for suffix in _SUFFIXES[kind]:
                out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
            if kind == "info":
                out[name + "_info"] = labels | {"version"}
    for spec in _metric_specs():
        base = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
        for suffix in _SUFFIXES[spec.kind]:
            out[base + suffix] = set(spec.labels) | ({"le"} if suffix == "_bucket" else set())
    return out


_BY = re.compile(r"\b(?:by|without)\s*\(([^()]*)\)", re.IGNORECASE)
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^{}]*)\}")
_MATCHER_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def label_uses(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names) pairs: label matchers of each selector, and each ``by (...)``
    clause attributed to the first metric after it (how our queries are written)."""
    text = _STRING.sub('""', expr)
    uses = [(m.group(1), set(_MATCHER_NAME.findall(m.group(2)))) for m in _SELECTOR.finditer(text)]
    for m in _BY.finditer(text):
        rest = metric_names_in_order(text[m.end() :])
        if rest:
            uses.append((rest[0], {x.strip() for x in m.group(1).split(",") if x.strip()}))
    return uses


def metric_names_in_order(expr: str) -> list[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    return [m.group(1) for m in _IDENT.finditer(text) if not m.group(2) and m.group(1).lower() not in _KEYWORDS]


def substitute(expr: str, variables: dict[str, str], window: str) -> str:
    """Replace Grafana's built-in interval variables and dashboard variables by values."""
    for builtin in ("__rate_interval", "__range", "__interval"):
        expr = expr.replace("${" + builtin + "}", window).replace("$" + builtin, window)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    return expr


def exposition_names(text: str) -> set[str]:
    """Sample names present in a /metrics exposition."""
    names: set[str] = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
