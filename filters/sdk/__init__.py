"""spamgate's SDK for filter authors: ``from spamgate.filters.sdk import Filter, Verdict, Reply, ...``.

Everything a filter needs is re-exported here (docs/plugins.md); the testing helpers stay
in :mod:`spamgate.filters.sdk.testing`.
"""

from spamgate.filters.sdk.api import (
    QUARANTINE_NOTE,
    AuthAttempt,
    Context,
    Decision,
    Envelope,
    Filter,
    FilterEnv,
    FilterFactory,
    HeaderRemoval,
    Learner,
    LearnKind,
    LearnResult,
    Message,
    Phase,
    ReadyCheck,
    RefusalObserver,
    Reply,
    SessionInfo,
    Symbol,
    Verdict,
)
from spamgate.filters.sdk.dns import DnsAnswer, DnsSettings, RdType, Resolver
from spamgate.filters.sdk.errors import DependencyError, OptionError, SpamgateError
from spamgate.filters.sdk.metrics import Counter, Gauge, Histogram, MemoryMetrics, Metrics, MetricSpec
from spamgate.filters.sdk.options import FilterOptions, Networks, parse_options
from spamgate.filters.sdk.runner import FilterSettings
from spamgate.filters.sdk.scoring import Action, Thresholds
from spamgate.filters.sdk.state import MemoryStore, StateError, StateStore

__all__ = [
    "QUARANTINE_NOTE", "Action", "AuthAttempt", "Context", "Counter", "Decision", "DependencyError", "DnsAnswer",
    "DnsSettings", "Envelope", "Filter", "FilterEnv", "FilterFactory", "FilterOptions", "FilterSettings", "Gauge",
    "HeaderRemoval", "Histogram", "LearnKind", "LearnResult", "Learner", "MemoryMetrics", "MemoryStore", "Message",
    "MetricSpec", "Metrics", "Networks", "OptionError", "Phase", "RdType", "ReadyCheck", "RefusalObserver", "Reply",
    "Resolver", "SessionInfo", "SpamgateError", "StateError", "StateStore", "Symbol", "Thresholds", "Verdict",
    "parse_options",
]
