"""Metrics a filter records through its ``FilterEnv.metrics`` handle (never a global registry).

The engine implements :class:`Metrics` on prometheus-client (one registry for the whole
process), so a filter's counters show up on ``/metrics`` next to the engine's; the SDK's
:class:`MemoryMetrics` keeps values in a dict so a test can read them back.

Declare what a filter records once, at module level, as a :class:`MetricSpec` (the
dashboard and docs tests read these), and bind it at construction::

    SCANS = MetricSpec("counter", "spamgate_example_scans_total", "Scans by result", ("result",))

    def __init__(self, name, options, env):
        self.scans = SCANS.bind(env.metrics)      # a Counter
        ...
        self.scans.labels("spam").inc()

Rules (Prometheus conventions): names are ``spamgate_<thing>_<unit>``, counters end in
``_total``, label values come from closed sets (never an IP, an address or exception text).
Binding the same spec again (a config reload builds new filter instances) returns the
collector that already exists; the same name with another kind or other labels is an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

__all__ = [
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "Histogram",
    "HistogramChild",
    "MemoryMetrics",
    "MetricKind",
    "MetricSpec",
    "Metrics",
    "check_metric",
]

MetricKind = Literal["counter", "histogram", "gauge"]
_NAME = re.compile(r"^spamgate_[a-z][a-z0-9_]*[a-z0-9]$")
_LABEL = re.compile(r"^[a-z][a-z0-9_]*$")


class CounterChild(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Counter(CounterChild, Protocol):
    def labels(self, *values: str) -> CounterChild: ...


class HistogramChild(Protocol):
    def observe(self, amount: float) -> None: ...


class Histogram(HistogramChild, Protocol):
    def labels(self, *values: str) -> HistogramChild: ...


class GaugeChild(Protocol):
    def set(self, value: float) -> None: ...
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class Gauge(GaugeChild, Protocol):
    def labels(self, *values: str) -> GaugeChild: ...


class Metrics(Protocol):
    """What ``FilterEnv.metrics`` offers: get-or-create a collector by name."""

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter: ...

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> Histogram: ...

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge: ...


def check_metric(kind: MetricKind, name: str, labels: Sequence[str]) -> None:
    """Raise ValueError for a name or label that breaks the conventions above."""
    if not _NAME.match(name):
        raise ValueError(f"metric name {name!r} must look like spamgate_<thing>_<unit>")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"counter {name!r} must end in _total")
    if kind != "counter" and name.endswith("_total"):
        raise ValueError(f"{kind} {name!r} must not end in _total (that suffix means a counter)")
    for label in labels:
        if not _LABEL.match(label) or label == "le":
            raise ValueError(f"metric {name!r}: bad label name {label!r}")


@dataclass(frozen=True)
class MetricSpec:
    """A metric a filter records, declared once at module level (see the module docstring)."""

    kind: MetricKind
    name: str
    doc: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_metric(self.kind, self.name, self.labels)

    def bind(self, metrics: Metrics) -> Counter | Histogram | Gauge:
        if self.kind == "counter":
            return metrics.counter(self.name, self.doc, self.labels)
        if self.kind == "histogram":
            return metrics.histogram(self.name, self.doc, self.labels, self.buckets)
        return metrics.gauge(self.name, self.doc, self.labels)

    def counter(self, metrics: Metrics) -> Counter:
        """``bind`` for a counter spec, typed as a Counter."""
        if self.kind != "counter":
            raise TypeError(f"{self.name} is a {self.kind}")
        return metrics.counter(self.name, self.doc, self.labels)

    def histogram(self, metrics: Metrics) -> Histogram:
        if self.kind != "histogram":
            raise TypeError(f"{self.name} is a {self.kind}")
        return metrics.histogram(self.name, self.doc, self.labels, self.buckets)

    def gauge(self, metrics: Metrics) -> Gauge:
        if self.kind != "gauge":
            raise TypeError(f"{self.name} is a {self.kind}")
        return metrics.gauge(self.name, self.doc, self.labels)


LabelValues: TypeAlias = tuple[str, ...]


class _Series:
    """One metric in memory: a value (or observations) per label-value tuple."""

    def __init__(self, kind: MetricKind, name: str, labels: tuple[str, ...]) -> None:
        self.kind = kind
        self.name = name
        self.label_names = labels
        self.values: dict[LabelValues, float] = {}
        self.observations: dict[LabelValues, list[float]] = {}
        self._key: LabelValues = ()

    def labels(self, *values: str) -> _Series:
        if len(values) != len(self.label_names):
            raise ValueError(f"{self.name}: expected labels {self.label_names}, got {values}")
        child = _Series(self.kind, self.name, ())
        child.values, child.observations, child._key = self.values, self.observations, tuple(values)
        return child

    def _own(self) -> LabelValues:
        if self.label_names and not self._key:
            raise ValueError(f"{self.name}: call .labels(...) first (labels {self.label_names})")
        return self._key

    def inc(self, amount: float = 1) -> None:
        if self.kind == "counter" and amount < 0:
            raise ValueError(f"{self.name}: counters only go up")
        key = self._own()
        self.values[key] = self.values.get(key, 0.0) + amount

    def dec(self, amount: float = 1) -> None:
        self.inc(-amount)

    def set(self, value: float) -> None:
        self.values[self._own()] = float(value)

    def observe(self, amount: float) -> None:
        key = self._own()
        self.observations.setdefault(key, []).append(amount)
        self.values[key] = self.values.get(key, 0.0) + 1


class MemoryMetrics:
    """:class:`Metrics` in a dict, for tests (and the default of a bare ``FilterEnv()``).

    ``value(name, *labels)`` reads a counter or gauge (a histogram: its observation count);
    ``observations(name, *labels)`` the values a histogram saw.
    """

    def __init__(self) -> None:
        self._series: dict[str, _Series] = {}

    def _get(self, kind: MetricKind, name: str, labels: Sequence[str]) -> _Series:
        check_metric(kind, name, labels)
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = _Series(kind, name, tuple(labels))
        elif series.kind != kind or series.label_names != tuple(labels):
            raise ValueError(f"metric {name!r} already registered as a {series.kind} with labels {series.label_names}")
        return series

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get("counter", name, labels)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> Histogram:
        return self._get("histogram", name, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get("gauge", name, labels)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._series)

    def value(self, name: str, *labels: str) -> float:
        series = self._series.get(name)
        return 0.0 if series is None else series.values.get(tuple(labels), 0.0)

    def observations(self, name: str, *labels: str) -> list[float]:
        series = self._series.get(name)
        return [] if series is None else list(series.observations.get(tuple(labels), []))
