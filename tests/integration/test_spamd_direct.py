"""The spamassassin filter and ``spamgate learn`` against a real spamd (no SMTP in between)."""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from spamgate.filters.sdk.api import Context, Decision, FilterEnv, Phase
from spamgate.filters.sdk.runner import FilterSettings
from spamgate.filters.sdk.scoring import Action, Thresholds
from spamgate.filters.sdk.testing import make_context, run_filter, run_pipeline
from spamgate.filters.services.spamd_client import SpamdError
from spamgate.filters.spamassassin.filter import RESULT_HEADER, SpamAssassinFilter
from spamgate.proxy.message import format_header, received_header
from spamgate.proxy.tools.learn import register
from tests.integration.services.spamd import SA_EXAMPLES, Spamd, start_spamd

pytestmark = pytest.mark.integration

ENV = FilterEnv(hostname="mx.example.edu", local_domains=("example.edu",))
SPAM = (SA_EXAMPLES / "sample-spam.txt").read_bytes()
HAM = (SA_EXAMPLES / "sample-nonspam.txt").read_bytes()
REJECT_AT_15 = Thresholds(reject=15.0, add_header=6.0)


def ctx(message: bytes, recipients: tuple[str, ...] = ("user@example.edu",)) -> Context:
    # A client on loopback: SpamAssassin trusts it, so no relay-based rule adds noise. The
    # trace header is the one the engine would write (ctx.received), from its own builder.
    received = format_header(*received_header(
        helo="client.test", peer_ip="127.0.0.1", reverse_name=None, hostname="mx.example.edu", protocol="ESMTP",
        session_id="test", tls=None, login=None, recipient=recipients[0] if len(recipients) == 1 else None,
    ))
    return make_context(message=message, recipients=recipients, peer_ip="127.0.0.1", helo="client.test",
                        received=received)


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spamd]:
    s = start_spamd(tmp_path_factory.mktemp("spamd"))
    yield s
    s.close()


@pytest.fixture
def own_spamd(tmp_path: Path) -> Iterator[Spamd]:
    """A spamd of the test's own, to stop, freeze and restart."""
    s = start_spamd(tmp_path, children=2)
    yield s
    s.close()


def make(spamd: Spamd, **options: object) -> SpamAssassinFilter:
    return SpamAssassinFilter("spamassassin", {"port": spamd.port, **options}, ENV)


def unique(message: bytes, tag: str = "") -> bytes:
    """The message with a fresh Message-ID and body line: Bayes' "seen" check hashes both."""
    tag = tag or uuid.uuid4().hex
    head, sep, body = message.partition(b"\n\n")
    kept = [ln for ln in head.split(b"\n") if not ln.lower().startswith(b"message-id:")]
    mid = f"Message-ID: <{tag}@learn.test>".encode()
    return b"\n".join([mid, *kept]) + sep + body + f"\nref {tag}\n".encode()


async def test_gtube_scores_1000_and_is_rejected(spamd: Spamd) -> None:
    f = make(spamd)
    v = await run_filter(f, Phase.DATA, ctx(SPAM))
    [sym] = v.symbols
    assert sym.name == "SPAMD" and sym.score >= 1000
    assert "GTUBE" in sym.detail
    headers = dict(v.add_headers)
    assert headers[RESULT_HEADER].startswith("Yes, score=") and "GTUBE" in headers[RESULT_HEADER]
    run = await run_pipeline([f], ctx(SPAM), [Phase.DATA], REJECT_AT_15)
    assert run.action is Action.REJECT


async def test_ham_is_accepted_with_its_rules_explained(spamd: Spamd) -> None:
    f = make(spamd, verb="report")
    run = await run_pipeline([f], ctx(HAM), [Phase.DATA], REJECT_AT_15)
    assert run.action is Action.ACCEPT
    [entry] = run.board.entries
    assert entry.symbol.name == "SPAMD" and entry.score < 5
    assert "required=5.0" in entry.symbol.detail
    [(name, value)] = run.board.add_headers
    assert name == RESULT_HEADER and value.startswith("No, score=")


async def test_unix_socket_scan_and_learn(spamd: Spamd) -> None:
    f = SpamAssassinFilter("spamassassin", {"socket": str(spamd.socket_path), "port": 1}, ENV)
    v = await run_filter(f, Phase.DATA, ctx(SPAM))
    assert v.symbols[0].score >= 1000
    assert await f.learn(unique(HAM), "ham") == "learned"


async def test_report_mode_lists_rule_points(spamd: Spamd) -> None:
    v = await run_filter(make(spamd, verb="report"), Phase.DATA, ctx(SPAM))
    assert "GTUBE(1000)" in v.symbols[0].detail


async def test_per_user_sends_the_recipient_as_spamd_user(spamd: Spamd) -> None:
    tag = uuid.uuid4().hex
    msg = unique(HAM, tag)
    await run_filter(make(spamd, per_user=True), Phase.DATA, ctx(msg, ("Bob@example.edu",)))
    lines = [ln for ln in spamd.output().splitlines() if tag in ln and "checking message" in ln]
    assert lines and " for bob:" in lines[0]


async def test_burst_queues_instead_of_failing(own_spamd: Spamd) -> None:
    f = make(own_spamd, max_concurrency=2)
    verdicts = await asyncio.gather(
        *(run_filter(f, Phase.DATA, ctx(SPAM if i % 2 else HAM)) for i in range(12))
    )
    scores = [v.symbols[0].score for v in verdicts]
    assert all(s >= 1000 for s in scores[1::2]) and all(s < 5 for s in scores[0::2])


@pytest.mark.parametrize(("on_error", "decision"), [("continue", Decision.CONTINUE), ("tempfail", Decision.TEMPFAIL)])
async def test_spamd_stopped_then_back(own_spamd: Spamd, on_error: str, decision: Decision) -> None:
    f = make(own_spamd)
    settings = FilterSettings(on_error=on_error)  # type: ignore[arg-type]
    await asyncio.to_thread(own_spamd.stop)
    with pytest.raises(SpamdError) as err:
        await run_filter(f, Phase.DATA, ctx(SPAM))
    assert err.value.kind == "connect"
    run = await run_pipeline([(f, settings)], ctx(SPAM), [Phase.DATA], REJECT_AT_15)
    assert run.results[Phase.DATA].decision is decision
    assert run.symbols == ["SPAMASSASSIN_ERROR"] and run.score == 0
    await asyncio.to_thread(own_spamd.start)
    run = await run_pipeline([(f, settings)], ctx(SPAM), [Phase.DATA], REJECT_AT_15)
    assert run.symbols == ["SPAMD"] and run.action is Action.REJECT


async def test_frozen_spamd_times_out(own_spamd: Spamd) -> None:
    f = make(own_spamd, scan_timeout=1.0)
    own_spamd.freeze()
    try:
        with pytest.raises(SpamdError) as err:
            await run_filter(f, Phase.DATA, ctx(HAM))
        assert err.value.kind == "timeout"
    finally:
        own_spamd.thaw()
    v = await run_filter(f, Phase.DATA, ctx(HAM))
    assert v.symbols[0].name == "SPAMD"


async def test_learning_changes_the_bayes_database(spamd: Spamd) -> None:
    before = await asyncio.to_thread(spamd.bayes_magic)
    f = make(spamd)
    spam, ham = unique(SPAM), unique(HAM)
    assert await f.learn(spam, "spam") == "learned"
    assert await f.learn(spam, "spam") == "known"  # spamd: already learned
    assert await f.learn(ham, "ham") == "learned"
    after = await asyncio.to_thread(spamd.bayes_magic)
    assert after["nspam"] == before["nspam"] + 1
    assert after["nham"] == before["nham"] + 1
    assert after["ntokens"] > before["ntokens"]


def test_learn_cli_teaches_a_maildir(spamd: Spamd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = mailbox.Maildir(tmp_path / "Junk", create=True)
    for _ in range(3):
        md.add(unique(SPAM))
    before = spamd.bayes_magic()
    parser = argparse.ArgumentParser(prog="spamgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["learn", "--spam", "--port", str(spamd.port), str(tmp_path / "Junk")])
    assert args.func(args) == 0
    assert "spam: 3 learned, 0 already known" in capsys.readouterr().out
    assert spamd.bayes_magic()["nspam"] == before["nspam"] + 3
