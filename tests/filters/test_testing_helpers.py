"""The public test helpers, used exactly as docs/plugins.md shows."""

from __future__ import annotations

import pytest

from spamgate.filters.sdk import Action, FilterEnv, FilterSettings, Phase, Thresholds
from spamgate.filters.sdk.state import MemoryStore
from spamgate.filters.sdk.testing import FakeClock, canonical, make_context, run_filter, run_pipeline
from tests.plugin_support import ensure_example_plugin


@pytest.fixture(scope="module", autouse=True)
def _plugin() -> None:
    ensure_example_plugin()


async def test_docs_example_runs() -> None:
    from spamgate_example import CrashFilter, KeywordFilter

    f = KeywordFilter("example_keyword", {"spam_score": 4}, FilterEnv())
    ctx = make_context(Phase.DATA, message="Subject: hi\n\ncheap VIAGRA\n")
    assert ctx.message is not None and ctx.message.raw == b"Subject: hi\r\n\r\ncheap VIAGRA\r\n"
    verdict = await run_filter(f, Phase.DATA, ctx)
    assert verdict.symbols[0].name == "EXAMPLE_SPAM_WORD"
    run = await run_pipeline([f, (CrashFilter("example_crash", {}, FilterEnv()), FilterSettings())], ctx,
                             thresholds=Thresholds(add_header=3.0))
    assert run.score == 4.0
    assert run.action is Action.ADD_HEADER
    assert run.symbols == ["EXAMPLE_SPAM_WORD", "EXAMPLE_CRASH_ERROR"]


def test_make_context_fills_rcpt_at_rcpt_phase() -> None:
    ctx = make_context(Phase.RCPT, recipients=["a@example.edu", "b@example.edu"])
    assert ctx.envelope.rcpt == "b@example.edu"
    assert ctx.envelope.mail_from_domain == "example.org"
    assert canonical(b"a\r\nb\nc") == b"a\r\nb\r\nc"


async def test_a_fake_clock_moves_a_stores_expiry_by_hand() -> None:
    """As docs/plugins.md shows: state with a TTL expires when the test says, not when time passes."""
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.set("greylist:k", "seen", ttl=60)
    clock.advance(59.5)
    assert clock() == 1059.5 and await store.get("greylist:k") == "seen"
    clock.advance(0.5)
    assert await store.get("greylist:k") is None
