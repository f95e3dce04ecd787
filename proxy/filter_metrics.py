"""The SDK's ``Metrics`` handle on prometheus-client: what ``FilterEnv.metrics`` is in the engine.

One instance per registry (``FILTER_METRICS`` for the default one), shared by every config
generation: a reload builds new filter instances that ask for the same metrics again, and
get the collectors registered the first time (prometheus-client itself would raise on a
duplicate name).

With ``[server] workers`` > 1 (prometheus-client's multiprocess mode) counters and histograms
add up over the workers; a filter's gauge shows the value a live worker set last
(``livemostrecent``): a gauge says how a dependency is (clamd up or not), not a per-process share.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram
from prometheus_client.metrics import MetricWrapperBase

from spamgate.filters.sdk.metrics import Counter, Gauge, Histogram, MetricKind, check_metric

__all__ = ["FILTER_METRICS", "PrometheusMetrics"]


class PrometheusMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._made: dict[str, tuple[MetricKind, tuple[str, ...], MetricWrapperBase]] = {}
        self._lock = threading.Lock()  # filters may be built from a worker thread (reload)

    def _get(self, kind: MetricKind, name: str, doc: str, labels: Sequence[str], **kw: Any) -> Any:
        check_metric(kind, name, labels)
        key = tuple(labels)
        with self._lock:
            made = self._made.get(name)
            if made is not None:
                if made[0] != kind or made[1] != key:
                    raise ValueError(f"metric {name!r} already registered as a {made[0]} with labels {made[1]}")
                return made[2]
            cls = {"counter": PromCounter, "histogram": PromHistogram, "gauge": PromGauge}[kind]
            if kind == "gauge":
                kw["multiprocess_mode"] = "livemostrecent"
            collector = cls(name, doc, key, registry=self.registry, **kw)
            self._made[name] = (kind, key, collector)
            return collector

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        c: Counter = self._get("counter", name, doc, labels)
        return c

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> Histogram:
        extra = {"buckets": tuple(buckets)} if buckets is not None else {}
        h: Histogram = self._get("histogram", name, doc, labels, **extra)
        return h

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        g: Gauge = self._get("gauge", name, doc, labels)
        return g

    def collectors(self) -> dict[str, tuple[MetricKind, tuple[str, ...]]]:
        """What filters registered so far: name -> (kind, label names)."""
        with self._lock:
            return {name: (kind, labels) for name, (kind, labels, _) in self._made.items()}


FILTER_METRICS = PrometheusMetrics()
