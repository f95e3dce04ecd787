"""The engine's FilterEnv: prometheus-backed metrics that survive a reload, the shared resolver."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from spamgate.filters.sdk.api import Phase, Symbol, Verdict
from spamgate.filters.sdk.runner import Outcome
from spamgate.filters.sdk.testing import make_context
from spamgate.proxy.config import parse_config
from spamgate.proxy.filter_metrics import FILTER_METRICS, PrometheusMetrics
from spamgate.proxy.pipeline import filter_env, record_outcome


def test_registering_twice_returns_the_existing_collector() -> None:
    registry = CollectorRegistry()
    first, second = PrometheusMetrics(registry), PrometheusMetrics(registry)
    c = first.counter("spamgate_example_scans_total", "doc", ("result",))
    assert first.counter("spamgate_example_scans_total", "doc", ("result",)) is c
    c.labels("spam").inc()
    assert registry.get_sample_value("spamgate_example_scans_total", {"result": "spam"}) == 1.0
    h = first.histogram("spamgate_example_duration_seconds", "doc", buckets=(0.1, 1.0))
    h.observe(0.5)
    assert registry.get_sample_value("spamgate_example_duration_seconds_bucket", {"le": "1.0"}) == 1.0
    with pytest.raises(ValueError, match="already registered"):
        first.counter("spamgate_example_scans_total", "doc", ("kind",))
    with pytest.raises(ValueError):  # another handle on the same registry: prometheus refuses the duplicate
        second.counter("spamgate_example_scans_total", "doc", ("result",))


def test_engine_env_has_the_process_wide_services() -> None:
    cfg = parse_config({"dns": {"nameservers": ["127.0.0.1"], "port": 5399}})
    a, b = filter_env(cfg), filter_env(cfg)  # two config generations
    assert a.metrics is FILTER_METRICS
    assert a.resolver is not None and a.resolver is b.resolver
    assert a.resolver.settings.nameservers == ("127.0.0.1",) and a.resolver.settings.port == 5399
    other = a.resolver.for_servers(("127.0.0.2",), 53)
    assert other is a.resolver.for_servers(("127.0.0.2",), 53) and other is not a.resolver
    assert a.dns == cfg.dns.resolved()


def test_undeclared_symbols_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import REGISTRY

    def count() -> float:
        return REGISTRY.get_sample_value("spamgate_filter_undeclared_symbols_total", {"filter": "sloppy"}) or 0.0

    before = count()
    verdict = Verdict.cont(Symbol("ODD", 1.0))
    outcome = Outcome("sloppy", Phase.DATA, verdict, 0.01, undeclared=("ODD",))
    ctx = make_context(Phase.DATA)
    with caplog.at_level(logging.WARNING, "spamgate.pipeline"):
        record_outcome(outcome, ctx)
        record_outcome(outcome, ctx)
    assert count() == before + 2
    assert sum("undeclared-symbol" in r.getMessage() for r in caplog.records) == 1
