"""Merge rules, scoring, caps, timeouts, exceptions and observe mode of the pipeline runner."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest

from spamgate.filters.sdk.api import (
    Context,
    Decision,
    FilterEnv,
    HeaderRemoval,
    Phase,
    Reply,
    SessionInfo,
    Symbol,
    Verdict,
)
from spamgate.filters.sdk.runner import FilterSettings, Pipeline, Scoreboard, Slot
from spamgate.filters.sdk.scoring import Action, Thresholds, choose_action, spam_headers
from spamgate.filters.sdk.testing import make_context, run_pipeline

R550 = Reply(550, "5.7.1", "no")
R451 = Reply(451, "4.7.1", "later")


class Fixed:
    symbols: frozenset[str] = frozenset()

    def __init__(self, name: str, verdict: Verdict | None = None, *, phases: frozenset[Phase] = frozenset(Phase),
                 delay: float = 0.0, exc: Exception | None = None) -> None:
        self.name = name
        self.phases = phases
        self.verdict = verdict or Verdict.cont()
        self.symbols = frozenset(s.name for s in self.verdict.symbols)
        self.delay = delay
        self.exc = exc
        self.calls: list[Phase] = []
        self.closed = False

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        self.calls.append(phase)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.exc is not None:
            raise self.exc
        return self.verdict

    async def close(self) -> None:
        self.closed = True


def ctx(phase: Phase = Phase.DATA, **kw: Any) -> Context:
    return make_context(phase, message=b"Subject: x\r\n\r\nbody\r\n", **kw)


async def test_most_severe_wins_and_ties_go_to_lowest_order() -> None:
    a = Fixed("a", Verdict.tempfail(R451))
    b = Fixed("b", Verdict.reject(Reply(550, "5.7.1", "b says no")))
    c = Fixed("c", Verdict.reject(Reply(554, "5.7.1", "c says no")))
    p = Pipeline([Slot(c, FilterSettings(order=30)), Slot(a, FilterSettings(order=10)),
                  Slot(b, FilterSettings(order=20))])
    res = await p.run(Phase.DATA, ctx(), Scoreboard())
    assert res.decision is Decision.REJECT
    assert res.decided_by == "b"
    assert res.reply is not None and res.reply.text == "b says no"
    assert [o.filter for o in res.outcomes] == ["a", "b", "c"]


async def test_filters_of_a_phase_run_concurrently() -> None:
    # Each filter waits until all five have started: run one after another, the first would
    # wait in vain and time out (an error outcome); run concurrently, all finish cleanly.
    started: list[str] = []
    everyone_in = asyncio.Event()

    class Rendezvous(Fixed):
        async def check(self, phase: Phase, ctx: Context) -> Verdict:
            started.append(self.name)
            if len(started) == 5:
                everyone_in.set()
            await everyone_in.wait()
            return Verdict.cont()

    p = Pipeline([Slot(Rendezvous(f"s{i}"), FilterSettings(timeout=5.0)) for i in range(5)])
    res = await p.run(Phase.DATA, ctx(), Scoreboard())
    assert [o.error for o in res.outcomes] == [None] * 5
    assert sorted(started) == [f"s{i}" for i in range(5)]


async def test_only_filters_declaring_the_phase_run_and_disabled_never() -> None:
    rcpt_only = Fixed("r", phases=frozenset({Phase.RCPT}))
    off = Fixed("off")
    p = Pipeline([Slot(rcpt_only), Slot(off, FilterSettings(enabled=False))])
    await p.run(Phase.DATA, ctx(), Scoreboard())
    await p.run(Phase.RCPT, ctx(Phase.RCPT), Scoreboard())
    assert rcpt_only.calls == [Phase.RCPT]
    assert off.calls == []


async def test_timeout_becomes_on_error_continue_with_error_symbol() -> None:
    hang = Fixed("hang", delay=30)
    board = Scoreboard()
    res = await Pipeline([Slot(hang, FilterSettings(timeout=0.1))]).run(Phase.DATA, ctx(), board)
    assert res.decision is Decision.CONTINUE
    assert res.outcomes[0].error == "timeout"
    assert [(e.symbol.name, e.score) for e in board.entries] == [("HANG_ERROR", 0.0)]


async def test_a_timeout_leaves_the_calling_task_usable_and_spares_the_other_filters() -> None:
    # The timeout runs in the caller's task (no task per check): after it fired, that task must
    # not be left cancelled, and filters beside the slow one keep their verdicts.
    hang, fast = Fixed("hang", delay=30), Fixed("fast", Verdict.cont(Symbol("FAST_HIT", 1.0)))
    alone = Pipeline([Slot(hang, FilterSettings(timeout=0.05))])
    assert (await alone.run(Phase.DATA, ctx(), Scoreboard())).outcomes[0].error == "timeout"
    await asyncio.sleep(0.01)  # would raise CancelledError if the timeout's cancel leaked
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    both = Pipeline([Slot(hang, FilterSettings(timeout=0.05, order=1)), Slot(fast, FilterSettings(order=2))])
    board = Scoreboard()
    res = await both.run(Phase.DATA, ctx(), board)
    assert [o.error for o in res.outcomes] == ["timeout", None]
    assert sorted(e.symbol.name for e in board.entries) == ["FAST_HIT", "HANG_ERROR"]


async def test_exception_becomes_tempfail_when_configured() -> None:
    boom = Fixed("boom", exc=RuntimeError("kaput"))
    res = await Pipeline([Slot(boom, FilterSettings(on_error="tempfail"))]).run(Phase.DATA, ctx(), Scoreboard())
    assert res.decision is Decision.TEMPFAIL
    assert res.reply is not None and res.reply.code == 451
    assert res.outcomes[0].error == "exception"


async def test_wrong_return_type_is_contained() -> None:
    class Bad(Fixed):
        async def check(self, phase: Phase, ctx: Context) -> Verdict:
            return "reject"  # type: ignore[return-value]

    res = await Pipeline([Slot(Bad("bad"))]).run(Phase.DATA, ctx(), Scoreboard())
    assert res.decision is Decision.CONTINUE and res.outcomes[0].error == "exception"


async def test_cancellation_is_not_swallowed() -> None:
    hang = Fixed("hang", delay=30)
    task = asyncio.ensure_future(Pipeline([Slot(hang)]).run(Phase.DATA, ctx(), Scoreboard()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_observe_mode_reports_but_never_decides_or_scores() -> None:
    obs = Fixed("obs", Verdict.reject(R550, Symbol("OBS_HIT", 9.0)))
    board = Scoreboard()
    res = await Pipeline([Slot(obs, FilterSettings(mode="observe"))]).run(Phase.DATA, ctx(), board)
    assert res.decision is Decision.CONTINUE
    assert res.outcomes[0].observed
    assert board.score == 0.0
    assert board.entries[0].observed and board.entries[0].symbol.score == 9.0
    assert board.observed == ["obs would reject at data: 550 5.7.1 no"]


async def test_max_score_caps_a_filter_over_the_transaction() -> None:
    f = Fixed("f", Verdict.cont(Symbol("A", 4.0), Symbol("B", 4.0)))
    g = Fixed("g", Verdict.cont(Symbol("C", 3.0)))
    board = Scoreboard()
    p = Pipeline([Slot(f, FilterSettings(max_score=5.0)), Slot(g)])
    await p.run(Phase.DATA, ctx(), board)
    assert [e.score for e in board.entries] == [4.0, 1.0, 3.0]
    await p.run(Phase.DATA, ctx(), board)
    assert board.filter_total("f") == 5.0
    assert board.score == 11.0


async def test_negative_scores_are_not_capped() -> None:
    f = Fixed("wl", Verdict.cont(Symbol("WL", -10.0)))
    board = Scoreboard()
    await Pipeline([Slot(f, FilterSettings(max_score=1.0))]).run(Phase.DATA, ctx(), board)
    assert board.score == -10.0


async def test_skip_authenticated_and_skip_networks() -> None:
    a = Fixed("a", Verdict.reject(R550))
    b = Fixed("b", Verdict.reject(R550))
    p = Pipeline([
        Slot(a, FilterSettings(skip_authenticated=True)),
        Slot(b, FilterSettings(skip_networks=(ipaddress.ip_network("192.0.2.0/24"),))),
    ])
    res = await p.run(Phase.DATA, ctx(user="alice", peer_ip="192.0.2.7"), Scoreboard())
    assert res.decision is Decision.CONTINUE and a.calls == [] and b.calls == []
    res = await p.run(Phase.DATA, ctx(peer_ip="198.51.100.1"), Scoreboard())
    assert res.decision is Decision.REJECT and a.calls == [Phase.DATA] and b.calls == [Phase.DATA]


async def test_headers_and_removals_collected_but_not_from_observe_mode() -> None:
    f = Fixed("f", Verdict.cont(add_headers=[("X-A", "1")], remove_headers=[HeaderRemoval("X-Spam-Status")]))
    o = Fixed("o", Verdict.cont(add_headers=[("X-O", "1")]))
    board = Scoreboard()
    await Pipeline([Slot(f), Slot(o, FilterSettings(mode="observe"))]).run(Phase.DATA, ctx(), board)
    assert board.add_headers == [("X-A", "1")]
    assert board.remove_headers == [HeaderRemoval("X-Spam-Status")]


async def test_close_closes_every_filter_even_if_one_fails() -> None:
    class BadClose(Fixed):
        async def close(self) -> None:
            raise OSError("nope")

    a, b = BadClose("a"), Fixed("b")
    await Pipeline([Slot(a), Slot(b)]).close()
    assert b.closed


@pytest.mark.parametrize(
    ("score", "expected"),
    [(-1.0, Action.ACCEPT), (5.99, Action.ACCEPT), (6.0, Action.ADD_HEADER), (9.0, Action.QUARANTINE),
     (12.0, Action.TEMPFAIL), (15.0, Action.REJECT), (100.0, Action.REJECT)],
)
def test_thresholds_checked_from_the_highest(score: float, expected: Action) -> None:
    t = Thresholds(reject=15.0, tempfail=12.0, quarantine=9.0, add_header=6.0)
    assert choose_action(score, t) is expected


def test_disabled_threshold_is_skipped() -> None:
    assert choose_action(50.0, Thresholds(reject=None, add_header=6.0)) is Action.ADD_HEADER
    assert choose_action(50.0, Thresholds(reject=None, add_header=None)) is Action.ACCEPT


async def test_spam_headers_explain_the_score() -> None:
    f = Fixed("f", Verdict.cont(Symbol("RBL_ZEN", 4.0), Symbol("SPAMD", 3.3)))
    run = await run_pipeline([f], ctx(), phases=[Phase.DATA])
    hdrs = dict(spam_headers(run.score, run.action, run.board.entries, Thresholds()))
    assert run.action is Action.ADD_HEADER
    assert hdrs["X-Spam-Flag"] == "YES"
    assert hdrs["X-Spam-Status"].startswith("Yes, score=7.3 required=6.0 tests=RBL_ZEN(4.0),SPAMD(3.3)")
    clean = dict(spam_headers(0.0, Action.ACCEPT, [], Thresholds()))
    assert "X-Spam-Flag" not in clean and clean["X-Spam-Status"].startswith("No, score=0.0")


async def test_run_pipeline_stops_at_the_first_hard_verdict() -> None:
    r = Fixed("r", Verdict.reject(R550), phases=frozenset({Phase.MAIL}))
    d = Fixed("d", phases=frozenset({Phase.DATA}))
    run = await run_pipeline([r, d], ctx())
    assert run.results[Phase.MAIL].decision is Decision.REJECT
    assert Phase.DATA not in run.results and d.calls == []


def test_verdict_needs_reply_for_hard_decisions_and_reply_is_one_line() -> None:
    with pytest.raises(ValueError):
        Verdict(Decision.REJECT)
    with pytest.raises(ValueError):
        Reply(550, "5.7.1", "two\r\nlines")
    assert str(Reply(550, "5.7.1", "x")) == "550 5.7.1 x"


def test_filter_env_local_domains_match_subdomains() -> None:
    env = FilterEnv(local_domains=("example.edu",))
    assert env.is_local_domain("EXAMPLE.edu") and env.is_local_domain("mail.example.edu")
    assert not env.is_local_domain("notexample.edu") and not env.is_local_domain(None)


def test_example_plugin_options_are_validated() -> None:
    from spamgate.filters.sdk.api import OptionError
    from spamgate.filters.sdk.options import FilterOptions, parse_options

    class Opts(FilterOptions):
        level: int = 1

    with pytest.raises(OptionError) as err:
        parse_options(Opts, {"levle": 2})
    assert err.value.key == "levle"
    with pytest.raises(OptionError) as err2:
        parse_options(Opts, {"level": "high"})
    assert err2.value.key == "level"
    opts: Mapping[str, Any] = {"level": 3}
    assert parse_options(Opts, opts).level == 3


class Counting(Fixed):
    """A RefusalObserver: hears of refusals, or fails or hangs when told."""

    def __init__(self, name: str, *, delay: float = 0.0, exc: Exception | None = None) -> None:
        super().__init__(name)
        self.heard: list[tuple[Phase, int, str]] = []
        self.refused_delay, self.refused_exc = delay, exc

    async def refused(self, phase: Phase, code: int, session: SessionInfo) -> None:
        if self.refused_delay:
            await asyncio.sleep(self.refused_delay)
        if self.refused_exc is not None:
            raise self.refused_exc
        self.heard.append((phase, code, session.peer_ip))


async def test_refusals_reach_every_observer_and_their_failures_stay_contained() -> None:
    plain, broken, slow, last = Fixed("plain"), Counting("broken", exc=RuntimeError("bug")), \
        Counting("slow", delay=5), Counting("last")
    p = Pipeline([Slot(plain, FilterSettings(order=1)), Slot(broken, FilterSettings(order=2)),
                  Slot(slow, FilterSettings(order=3, timeout=0.05)), Slot(last, FilterSettings(order=4))])
    assert [s.name for s in p.observers] == ["broken", "slow", "last"]
    await p.tell_refused(Phase.RCPT, 550, SessionInfo("s", "192.0.2.1"))
    assert last.heard == [(Phase.RCPT, 550, "192.0.2.1")]
    assert not slow.heard and not plain.calls
    assert Pipeline([Slot(plain, FilterSettings())]).observers == ()
