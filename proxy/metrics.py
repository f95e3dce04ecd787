"""The engine's Prometheus metrics (filters record theirs through FilterEnv.metrics: proxy.filter_metrics).

Label values come only from closed sets known at start: listener names, filter names,
phases, actions, reply classes, symbols declared by filters. Never an IP, an address,
a HELO name or exception text: those go to the logs, keyed by the session id.
"""

from __future__ import annotations

import os
from typing import Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info, multiprocess
from prometheus_client.metrics import MetricWrapperBase

from spamgate.proxy import __version__

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 10485760, 52428800)
SCORE_BUCKETS = (-5, 0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100)

# Set by the [server] workers supervisor (proxy/workers.py): values live in files every worker writes.
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

BUILD_INFO: Info | Gauge
if MULTIPROCESS:
    # Info has no multiprocess store: the same series, spamgate_build_info{version=...} 1, as a gauge.
    BUILD_INFO = Gauge("spamgate_build_info", "spamgate version", ["version"], multiprocess_mode="max")
    BUILD_INFO.labels(__version__).set(1)
else:
    BUILD_INFO = Info("spamgate_build", "spamgate version")
    BUILD_INFO.info({"version": __version__})

# Gauges name how multiprocess mode adds up workers (only live ones); one process ignores it.
SESSIONS_ACTIVE = Gauge("spamgate_sessions_active", "Client sessions open now", ["listener"],
                        multiprocess_mode="livesum")
SESSIONS = Counter("spamgate_sessions_total", "Client sessions accepted", ["listener"])
SESSIONS_REFUSED = Counter(
    "spamgate_sessions_refused_total", "Connections refused by a concurrency limit", ["listener", "reason"]
)
TLS_SESSIONS = Counter("spamgate_tls_sessions_total", "Sessions that negotiated TLS", ["listener", "version"])

TRANSACTIONS = Counter(
    "spamgate_transactions_total",
    "Finished transactions by final action (accept, add_header, quarantine, tempfail, reject, "
    "backend_reject, backend_tempfail, error)",
    ["action"],
)
REPLIES = Counter("spamgate_replies_total", "Replies sent to clients", ["phase", "class"])
MESSAGE_SIZE = Histogram("spamgate_message_size_bytes", "Size of received messages", buckets=SIZE_BUCKETS)
MESSAGE_SCORE = Histogram("spamgate_message_score", "Spam score at end of DATA", buckets=SCORE_BUCKETS)
RECEIVED_BYTES = Counter("spamgate_received_bytes_total", "Message bytes received from clients")
LIMITS = Counter("spamgate_limit_exceeded_total", "Requests refused by a configured limit", ["limit"])
INTERNAL_ERRORS = Counter("spamgate_internal_errors_total", "Unexpected exceptions answered with 451 4.3.0")

FILTER_DURATION = Histogram(
    "spamgate_filter_duration_seconds", "Time a filter check took", ["filter", "phase"], buckets=LATENCY_BUCKETS
)
FILTER_VERDICTS = Counter(
    "spamgate_filter_verdicts_total", "Enforced filter verdicts", ["filter", "phase", "decision"]
)
FILTER_OBSERVED = Counter(
    "spamgate_filter_observed_total", "Observe-mode verdicts (would have been enforced)", ["filter", "decision"]
)
FILTER_ERRORS = Counter("spamgate_filter_errors_total", "Filter timeouts and exceptions", ["filter", "kind"])
SYMBOLS = Counter("spamgate_symbols_total", "Symbols emitted", ["filter", "symbol"])
UNDECLARED_SYMBOLS = Counter(
    "spamgate_filter_undeclared_symbols_total", "Symbols a filter emitted without declaring them (a bug)", ["filter"]
)

BACKEND_DURATION = Histogram(
    "spamgate_backend_duration_seconds",
    "Backend round trip per relayed command (connect, mail, rcpt, data)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
BACKEND_REPLIES = Counter("spamgate_backend_replies_total", "Backend replies by stage and class", ["stage", "class"])
BACKEND_ERRORS = Counter("spamgate_backend_errors_total", "Backend unreachable, timing out or broken", ["kind"])
BACKEND_POOL = Gauge("spamgate_backend_pool_idle_connections", "Idle backend connections in the pool",
                     multiprocess_mode="livesum")

QUARANTINED = Counter("spamgate_quarantine_messages_total", "Messages stored in quarantine")
AUTH_ATTEMPTS = Counter("spamgate_auth_attempts_total", "SMTP AUTH attempts", ["mechanism", "result"])
PENALTY_BOX = Counter("spamgate_auth_penalty_box_total", "Client IPs put in the brute-force penalty box")
STATE_ERRORS = Counter(
    "spamgate_state_errors_total", "State store operations that failed (the engine went on locally)", ["operation"]
)
CONFIG_RELOADS = Counter("spamgate_config_reloads_total", "Config reloads by result", ["result"])


def exposition_registry() -> CollectorRegistry:
    """What /metrics renders: this process's registry, or with workers the sum of every worker's files."""
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def reply_class(code: int) -> str:
    return f"{code // 100}xx"


M = TypeVar("M", bound=MetricWrapperBase)


class Bound(Generic[M]):
    """A metric's children, bound once per label values: ``labels()`` validates, locks and looks up on
    every call, and the hot path (every reply, command and message) asks for the same few children.
    Only for closed label sets (a child is kept for the process's life)."""

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


SESSIONS_BY = Bound(SESSIONS)
SESSIONS_ACTIVE_BY = Bound(SESSIONS_ACTIVE)
REPLIES_BY = Bound(REPLIES)
TRANSACTIONS_BY = Bound(TRANSACTIONS)
BACKEND_REPLIES_BY = Bound(BACKEND_REPLIES)
BACKEND_DURATION_BY = Bound(BACKEND_DURATION)
