"""Find, load and configure filters (entry points), and record what they do.

Discovery follows flake8's plugin loader: every filter, built-in or third-party, is
an entry point in the group ``spamgate.filters``; only filters named in the config
are loaded; an import or option error stops start-up naming the filter, its
distribution and the bad key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from spamgate.filters.sdk.api import Context, Decision, Filter, FilterEnv, Learner, OptionError, Phase
from spamgate.filters.sdk.runner import Outcome, Pipeline, Slot
from spamgate.filters.sdk.state import StateStore
from spamgate.filters.services.dns import shared_resolver
from spamgate.proxy import metrics
from spamgate.proxy.config import Config, FilterTable, parse_config
from spamgate.proxy.errors import PluginError
from spamgate.proxy.filter_metrics import FILTER_METRICS

__all__ = [
    "DEFAULT_LEARNER", "ENTRY_POINT_GROUP", "PluginError", "build_pipeline", "describe", "discover", "filter_env",
    "learner_from", "load_filter",
]

ENTRY_POINT_GROUP = "spamgate.filters"
log = logging.getLogger("spamgate.pipeline")


def discover() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _dist(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "unknown distribution"


def filter_env(cfg: Config, state: StateStore | None = None) -> FilterEnv:
    """What every filter of this config generation gets: site facts and the process-wide services."""
    dns = cfg.dns.resolved()
    return FilterEnv(
        hostname=cfg.server.hostname,
        local_domains=cfg.auth.local_domains,
        dns=dns,
        state_dir=cfg.server.state_dir,
        sender_login_map=cfg.auth.sender_login_map,
        metrics=FILTER_METRICS,
        resolver=shared_resolver(dns, FILTER_METRICS),
        state=state,
    )


def _load(name: str, table: FilterTable, ep: EntryPoint, cfg: Config, env: FilterEnv) -> Filter:
    where = f"{cfg.source}: [filters.{name}]"
    try:
        factory = ep.load()
    except Exception as exc:
        raise PluginError(f"{where}: cannot import {ep.value} from {_dist(ep)}: {exc!r}") from exc
    try:
        flt = factory(name, table.options, env)
    except OptionError as exc:
        raise PluginError(f"{where}.{exc.key}: {exc.message} (filter {name!r} from {_dist(ep)})") from exc
    except Exception as exc:
        raise PluginError(f"{where}: filter {name!r} from {_dist(ep)} failed to start: {exc!r}") from exc
    if not isinstance(flt, Filter):
        raise PluginError(f"{where}: {ep.value} from {_dist(ep)} does not implement the Filter protocol")
    flt.name = name
    return flt


_UNDECLARED_LOGGED: set[tuple[str, str]] = set()


def record_outcome(outcome: Outcome, ctx: Context) -> None:
    """Metrics and one log line per enforced or observed hard verdict."""
    f, phase = outcome.filter, outcome.phase.value
    metrics.FILTER_DURATION.labels(f, phase).observe(outcome.duration)
    v = outcome.verdict
    if outcome.error is not None:
        metrics.FILTER_ERRORS.labels(f, outcome.error).inc()
    for sym in v.symbols:
        if sym.name not in outcome.undeclared:
            metrics.SYMBOLS.labels(f, sym.name).inc()
    if outcome.undeclared:
        # A filter bug, never a mail problem: counted, logged once per symbol, the mail goes on.
        metrics.UNDECLARED_SYMBOLS.labels(f).inc(len(outcome.undeclared))
        for name in outcome.undeclared:
            if (f, name) not in _UNDECLARED_LOGGED:
                _UNDECLARED_LOGGED.add((f, name))
                log.warning("filter=%s symbol=%s error=undeclared-symbol (add it to the filter's symbols)", f, name)
    if outcome.observed:
        if v.decision is not Decision.CONTINUE:
            metrics.FILTER_OBSERVED.labels(f, v.decision.value).inc()
            log.info("filter=%s phase=%s observe=would-%s reply=%r", f, phase, v.decision.value, str(v.reply))
        return
    metrics.FILTER_VERDICTS.labels(f, phase, v.decision.value).inc()
    if v.decision is not Decision.CONTINUE:
        log.info("filter=%s phase=%s verdict=%s reply=%r", f, phase, v.decision.value, str(v.reply))


def load_filter(name: str, cfg: Config, options: Mapping[str, Any] | None = None) -> Filter:
    """One filter by its entry-point name, with its table's options (or the ones given)."""
    ep = discover().get(name)
    if ep is None:
        raise PluginError(f"{cfg.source}: [filters.{name}]: no filter named {name!r} is installed "
                          f"(entry point group {ENTRY_POINT_GROUP})")
    table = cfg.filters.get(name) or FilterTable()
    if options is not None:
        table = FilterTable.model_validate({**table.model_dump(exclude_unset=True), **options})
    return _load(name, table, ep, cfg, filter_env(cfg))


DEFAULT_LEARNER = "spamassassin"


def learner_from(cfg: Config | None, name: str = DEFAULT_LEARNER, overrides: dict[str, Any] | None = None) -> Learner:
    """The filter ``name`` (its ``[filters.NAME]`` options, plus ``overrides``), if it can learn.

    ``spamgate learn`` and "release and learn as ham" use it; like every filter it is found
    through its entry point, so the engine imports no built-in.
    """
    cfg = cfg or parse_config({}, "<no config>")
    flt = load_filter(name, cfg, overrides or None)
    if not isinstance(flt, Learner):
        raise PluginError(f"{cfg.source}: [filters.{name}]: filter {name!r} cannot learn (no learn())")
    return flt


def build_pipeline(cfg: Config, state: StateStore | None = None) -> Pipeline:
    available = discover()
    env = filter_env(cfg, state)
    slots = []
    for name, table in cfg.enabled_filters.items():
        ep = available.get(name)
        if ep is None:
            known = ", ".join(sorted(available)) or "none"
            raise PluginError(
                f"{cfg.source}: [filters.{name}]: no filter named {name!r} is installed "
                f"(entry point group {ENTRY_POINT_GROUP}; installed: {known})"
            )
        slots.append(Slot(_load(name, table, ep, cfg, env), table))
    return Pipeline(slots, listener=record_outcome)


def describe(pipeline: Pipeline) -> str:
    """The resolved filter order per phase, for ``spamgate check-config``."""
    lines = []
    for phase in Phase:
        slots = pipeline.filters_for(phase)
        names = [
            f"{s.name}(order={s.settings.order}{', observe' if s.settings.mode == 'observe' else ''})"
            for s in slots
        ]
        lines.append(f"  {phase.value:8} {' -> '.join(names) if names else '(none)'}")
    return "\n".join(lines)
