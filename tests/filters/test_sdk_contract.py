"""The SDK's metrics handle and the enforcement of ``Filter.symbols``."""

from __future__ import annotations

import pytest

from spamgate.filters.sdk.api import Context, FilterEnv, Phase, Symbol, Verdict
from spamgate.filters.sdk.metrics import MemoryMetrics, MetricSpec
from spamgate.filters.sdk.runner import Pipeline, Scoreboard, Slot
from spamgate.filters.sdk.testing import UndeclaredSymbol, make_context, run_filter, run_pipeline


class Emits:
    name = "emits"
    phases = frozenset({Phase.DATA})
    symbols = frozenset({"DECLARED"})

    def __init__(self, *names: str) -> None:
        self.names = names

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        return Verdict.cont(*(Symbol(n, 1.0) for n in self.names))

    async def close(self) -> None:
        return None


def test_memory_metrics_get_or_create_and_read_back() -> None:
    m = MemoryMetrics()
    c = m.counter("spamgate_example_scans_total", "doc", ("result",))
    c.labels("spam").inc()
    assert m.counter("spamgate_example_scans_total", "doc", ("result",)) is c  # a reload asks again
    m.counter("spamgate_example_scans_total", "doc", ("result",)).labels("spam").inc(2)
    assert m.value("spamgate_example_scans_total", "spam") == 3.0
    h = m.histogram("spamgate_example_duration_seconds", "doc")
    h.observe(0.5)
    assert m.observations("spamgate_example_duration_seconds") == [0.5]
    g = m.gauge("spamgate_example_up", "doc")
    g.set(1)
    assert m.value("spamgate_example_up") == 1.0
    with pytest.raises(ValueError, match="already registered"):
        m.counter("spamgate_example_scans_total", "doc", ("kind",))
    with pytest.raises(ValueError, match="labels"):
        c.labels("spam", "extra")
    with pytest.raises(ValueError, match="labels"):
        c.inc()


@pytest.mark.parametrize(
    ("kind", "name", "labels", "why"),
    [
        ("counter", "example_total", (), "spamgate_"),
        ("counter", "spamgate_example_scans", (), "_total"),
        ("gauge", "spamgate_example_up_total", (), "counter"),
        ("counter", "spamgate_example_total", ("le",), "label"),
    ],
)
def test_metric_conventions_are_checked(kind: str, name: str, labels: tuple[str, ...], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        MetricSpec(kind, name, "doc", labels)  # type: ignore[arg-type]


def test_spec_binds_to_the_env_handle() -> None:
    env = FilterEnv()
    spec = MetricSpec("counter", "spamgate_example_hits_total", "doc")
    spec.counter(env.metrics).inc()
    assert isinstance(env.metrics, MemoryMetrics) and env.metrics.value("spamgate_example_hits_total") == 1.0
    with pytest.raises(TypeError):
        spec.gauge(env.metrics)
    assert env.resolver is None and env.state is None  # the engine fills them in


async def test_testing_helpers_refuse_undeclared_symbols() -> None:
    ctx = make_context(Phase.DATA, message="Subject: x\n\nbody\n")
    assert (await run_filter(Emits("DECLARED"), Phase.DATA, ctx)).symbols[0].name == "DECLARED"
    with pytest.raises(UndeclaredSymbol, match="SURPRISE"):
        await run_filter(Emits("DECLARED", "SURPRISE"), Phase.DATA, ctx)
    with pytest.raises(UndeclaredSymbol, match="SURPRISE"):
        await run_pipeline([Emits("SURPRISE")], ctx)


async def test_production_runner_reports_undeclared_symbols_and_keeps_going() -> None:
    ctx = make_context(Phase.DATA, message="Subject: x\n\nbody\n")
    board = Scoreboard()
    result = await Pipeline([Slot(Emits("DECLARED", "SURPRISE", "SURPRISE"))]).run(Phase.DATA, ctx, board)
    assert result.outcomes[0].undeclared == ("SURPRISE",)
    assert board.score == 3.0  # the mail goes on, scored as emitted


async def test_the_runners_error_symbol_needs_no_declaration() -> None:
    class Crash(Emits):
        async def check(self, phase: Phase, ctx: Context) -> Verdict:
            raise RuntimeError("boom")

    run = await run_pipeline([Crash()], make_context(Phase.DATA, message="Subject: x\n\nbody\n"))
    assert run.symbols == ["EMITS_ERROR"]
