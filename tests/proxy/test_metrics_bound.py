"""Metric children bound once (metrics.Bound) are the exported children, not copies."""

from __future__ import annotations

from prometheus_client import REGISTRY

from spamgate.proxy import metrics


def _value(name: str, **labels: str) -> float:
    v = REGISTRY.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_a_bound_child_counts_in_the_exported_series() -> None:
    before = _value("spamgate_replies_total", phase="bound-test", **{"class": "2xx"})
    child = metrics.REPLIES_BY("bound-test", "2xx")
    assert metrics.REPLIES_BY("bound-test", "2xx") is child  # looked up once
    child.inc()
    metrics.REPLIES_BY("bound-test", "2xx").inc()
    assert _value("spamgate_replies_total", phase="bound-test", **{"class": "2xx"}) == before + 2
    # Another label set is another child.
    assert metrics.REPLIES_BY("bound-test", "5xx") is not child


def test_bound_histogram_observes() -> None:
    before = _value("spamgate_backend_duration_seconds_count", stage="bound-test")
    metrics.BACKEND_DURATION_BY("bound-test").observe(0.002)
    assert _value("spamgate_backend_duration_seconds_count", stage="bound-test") == before + 1
