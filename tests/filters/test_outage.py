"""One log line per fact: an outage is logged when it starts, reminded, and when it ends."""

from __future__ import annotations

import asyncio
import logging

import pytest

from spamgate.filters.sdk.api import Phase, Verdict
from spamgate.filters.sdk.outage import DependencyError, Outage
from spamgate.filters.sdk.runner import FilterSettings, Pipeline, Scoreboard, Slot
from spamgate.filters.sdk.testing import FakeClock, make_context


def test_down_reminder_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    o = Outage("spamd 127.0.0.1:783", logging.getLogger("t.outage"), remind_every=60, clock=clock)
    with caplog.at_level(logging.INFO, "t.outage"):
        for _ in range(100):
            o.failed("connection refused", ConnectionRefusedError(111, "refused"))
            clock.now += 0.1
        assert o.down and o.failures == 100
        clock.now += 60
        o.failed("connection refused")
        o.ok()
        o.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0] == "dependency=spamd 127.0.0.1:783 state=down error=connection refused"
    assert "state=still-down" in lines[1] and "failures=101" in lines[1]
    assert lines[2].startswith("dependency=spamd 127.0.0.1:783 state=recovered after=")
    assert all(r.exc_info is None for r in caplog.records)  # expected failures: no traceback at info
    assert not o.down


def test_a_real_bug_keeps_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    o = Outage("filter:x", logging.getLogger("t.outage2"))
    with caplog.at_level(logging.INFO, "t.outage2"):
        try:
            {}["missing"]
        except KeyError as exc:
            o.failed("KeyError", exc)
    assert caplog.records[0].exc_info is not None


class Down:
    name = "spamdown"
    phases = frozenset({Phase.DATA})
    symbols: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.up = False

    async def check(self, phase: Phase, ctx: object) -> Verdict:
        if not self.up:
            raise DependencyError("spamd 127.0.0.1:783: connection refused")
        return Verdict.cont()

    async def close(self) -> None:
        pass


async def test_a_filter_whose_dependency_is_down_logs_once_for_fifty_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Down()
    pipe = Pipeline([Slot(f, FilterSettings(on_error="continue"))])
    with caplog.at_level(logging.INFO, "spamgate"):
        results = [await pipe.run(Phase.DATA, make_context(Phase.DATA, message="Subject: x\n\nhi\n"), Scoreboard())
                   for _ in range(50)]
        f.up = True
        await pipe.run(Phase.DATA, make_context(Phase.DATA, message="Subject: x\n\nhi\n"), Scoreboard())
    assert all(r.outcomes[0].error == "exception" for r in results)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "state=down" in lines[0] and "connection refused" in lines[0]
    assert "state=recovered" in lines[1]
    assert all(r.exc_info is None for r in caplog.records)


async def test_timeouts_are_one_outage_too(caplog: pytest.LogCaptureFixture) -> None:
    class Slow(Down):
        async def check(self, phase: Phase, ctx: object) -> Verdict:
            await asyncio.sleep(10)
            return Verdict.cont()

    pipe = Pipeline([Slot(Slow(), FilterSettings(timeout=0.01))])
    with caplog.at_level(logging.INFO, "spamgate"):
        for _ in range(5):
            await pipe.run(Phase.DATA, make_context(Phase.DATA, message="Subject: x\n\nhi\n"), Scoreboard())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["dependency=filter:spamdown state=down error=timeout after 0.01s"]
