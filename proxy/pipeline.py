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

from spamgate.filters.sdk.api import Context, Decision, Filter, Learner, OptionError, Phase
from spamgate.filters.sdk.runner import FilterSettings, Outcome, Pipeline, Slot
from spamgate.proxy import metrics
from spamgate.proxy.config import Config, FilterTable, parse_config
from spamgate.proxy.errors import PluginError

__all__ = [
    "DEFAULT_LEARNER", "ENTRY_POINT_GROUP", "PluginError", "build_pipeline", "describe", "discover", "learner_from",
    "load_filter",
]

ENTRY_POINT_GROUP = "spamgate.filters"
log = logging.getLogger("spamgate.pipeline")


def discover() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _dist(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "unknown distribution"


def _settings(t: FilterTable) -> FilterSettings:
    return FilterSettings(
        enabled=t.enabled,
        order=t.order,
        timeout=t.timeout,
        on_error=t.on_error,
        max_score=t.max_score,
        skip_authenticated=t.skip_authenticated,
        skip_networks=t.skip_networks,
        mode=t.mode,
    )


def _load(name: str, table: FilterTable, ep: EntryPoint, cfg: Config, state: Any = None) -> Filter:
    where = f"{cfg.source}: [filters.{name}]"
    try:
        factory = ep.load()
    except Exception as exc:
        raise PluginError(f"{where}: cannot import {ep.value} from {_dist(ep)}: {exc!r}") from exc
    try:
        flt = factory(name, table.options, cfg.filter_env(state))
    except OptionError as exc:
        raise PluginError(f"{where}.{exc.key}: {exc.message} (filter {name!r} from {_dist(ep)})") from exc
    except Exception as exc:
        raise PluginError(f"{where}: filter {name!r} from {_dist(ep)} failed to start: {exc!r}") from exc
    if not isinstance(flt, Filter):
        raise PluginError(f"{where}: {ep.value} from {_dist(ep)} does not implement the Filter protocol")
    flt.name = name
    return flt


def record_outcome(outcome: Outcome, ctx: Context) -> None:
    """Metrics and one log line per enforced or observed hard verdict."""
    f, phase = outcome.filter, outcome.phase.value
    metrics.FILTER_DURATION.labels(f, phase).observe(outcome.duration)
    v = outcome.verdict
    if outcome.error is not None:
        metrics.FILTER_ERRORS.labels(f, outcome.error).inc()
    for sym in v.symbols:
        metrics.SYMBOLS.labels(f, sym.name).inc()
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
    return _load(name, table, ep, cfg)


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


def build_pipeline(cfg: Config, state: Any = None) -> Pipeline:
    available = discover()
    slots = []
    for name, table in cfg.enabled_filters.items():
        ep = available.get(name)
        if ep is None:
            known = ", ".join(sorted(available)) or "none"
            raise PluginError(
                f"{cfg.source}: [filters.{name}]: no filter named {name!r} is installed "
                f"(entry point group {ENTRY_POINT_GROUP}; installed: {known})"
            )
        slots.append(Slot(_load(name, table, ep, cfg, state), _settings(table)))
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
