from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spamgate.filters.sdk.api import Decision, FilterEnv, OptionError, Phase
from spamgate.filters.sdk.runner import FilterSettings
from spamgate.filters.sdk.scoring import Action, Thresholds
from spamgate.filters.sdk.testing import MemoryMetrics, make_context, run_filter, run_pipeline
from spamgate.filters.services.spamd_client import SpamdError
from spamgate.filters.spamassassin.filter import (
    RESULT_HEADER,
    SKIPPED_SIZE,
    STRIPPED_HEADERS,
    SpamAssassinFilter,
    SpamAssassinOptions,
)
from tests.filters.fake_spamd import FakeSpamd, spamd_reply

ENV = FilterEnv(hostname="mx.example.edu", local_domains=("example.edu",))
MSG = "From: a@example.org\nTo: user@example.edu\nSubject: hello\nX-Spam-Status: No, score=-100\n\nHello there.\n"

REPORT = (
    b"Spam detection software, running on the system \"vm\",\n"
    b"has identified this incoming email as possible spam.\n\n"
    b"Content analysis details:   (1000.0 points, 5.0 required)\n\n"
    b" pts rule name              description\n"
    b"---- ---------------------- --------------------------------------------------\n"
    b"-0.0 NO_RECEIVED            Informational: message has no Received headers\n"
    b"1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email\n"
    b" 2.5 SOME_RULE              BODY: a rule with\n"
    b"                            a wrapped description 12 NOT_A_RULE\n"
)


def metric(name: str, **labels: str) -> float:
    assert isinstance(ENV.metrics, MemoryMetrics)  # a bare FilterEnv records in memory
    return ENV.metrics.value(name, *labels.values())


@pytest.fixture
async def spamd() -> AsyncIterator[FakeSpamd]:
    fake = await FakeSpamd().start()
    yield fake
    await fake.close()


def make(fake: FakeSpamd, **options: object) -> SpamAssassinFilter:
    return SpamAssassinFilter("spamassassin", {"port": fake.port, **options}, ENV)


# --- options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"hots": "127.0.0.1"}, "hots"),
        ({"verb": "process"}, "verb"),
        ({"mode": "report"}, "mode"),
        ({"max_size": 0}, "max_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"user": "bob; rm -rf"}, "user"),
        ({"symbol": "spamd lower"}, "symbol"),
        ({"port": 70000}, "port"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as err:
        SpamAssassinFilter("spamassassin", options, ENV)
    assert err.value.key == key


def test_declares_phase_and_symbols() -> None:
    f = SpamAssassinFilter("spamassassin", {"symbol": "SA_SCORE"}, ENV)
    assert f.phases == frozenset({Phase.DATA})
    assert f.symbols == frozenset({"SA_SCORE", SKIPPED_SIZE})


# --- scanning -----------------------------------------------------------------------


async def test_symbols_mode_scores_and_explains(spamd: FakeSpamd) -> None:
    spamd.reply = spamd_reply(b"GTUBE,NO_RECEIVED,NO_RELAYS", spam="True ; 1000.0 / 5.0")
    before = metric("spamgate_spamd_scans_total", result="spam")
    v = await run_filter(make(spamd, score_scale=0.5), Phase.DATA, make_context(message=MSG))
    [req] = spamd.requests
    assert req.verb == "SYMBOLS"
    assert "User" not in req.headers
    assert v.decision is Decision.CONTINUE
    [sym] = v.symbols
    assert (sym.name, sym.score) == ("SPAMD", 500.0)
    assert "GTUBE" in sym.detail and "required=5.0" in sym.detail
    assert v.add_headers == ((RESULT_HEADER, "Yes, score=1000.0 required=5.0 tests=GTUBE,NO_RECEIVED,NO_RELAYS"),)
    assert {r.name for r in v.remove_headers} == set(STRIPPED_HEADERS)
    assert metric("spamgate_spamd_scans_total", result="spam") == before + 1


async def test_report_mode_keeps_rule_points(spamd: FakeSpamd) -> None:
    spamd.reply = spamd_reply(REPORT, spam="True ; 1002.5 / 5.0")
    v = await run_filter(make(spamd, verb="report"), Phase.DATA, make_context(message=MSG))
    assert spamd.requests[0].verb == "REPORT"
    assert v.symbols[0].detail == "score=1002.5 required=5.0 tests=NO_RECEIVED(-0),GTUBE(1000),SOME_RULE(2.5)"


async def test_clean_message_is_ham_with_negative_weight(spamd: FakeSpamd) -> None:
    spamd.reply = spamd_reply(b"", spam="False ; -1.9 / 5.0")
    v = await run_filter(make(spamd, result_header=False), Phase.DATA, make_context(message=MSG))
    assert v.symbols[0].score == -1.9
    assert "tests=none" in v.symbols[0].detail
    assert v.add_headers == ()


async def test_message_sent_with_the_engines_received_header_first(spamd: FakeSpamd) -> None:
    # The engine builds the one Received line (ctx.received); the filter must not write its own.
    trace = "Received: from mail.example.org (mail.example.org [198.51.100.7])\n\tby mx.example.edu id x; date\n"
    ctx = make_context(message=MSG, peer_ip="198.51.100.7", helo="mail.example.org", received=trace)
    await run_filter(make(spamd), Phase.DATA, ctx)
    body = spamd.requests[0].body
    assert ctx.message is not None
    assert body == trace.replace("\n", "\r\n").encode() + ctx.message.raw
    await run_filter(make(spamd, add_received=False), Phase.DATA, ctx)
    assert spamd.requests[1].body == (ctx.message.raw if ctx.message else b"?")


async def test_user_option_and_per_user(spamd: FakeSpamd) -> None:
    rcpts = ("list@lists.example.org", "Carol@Example.EDU", "dave@example.edu")
    await run_filter(make(spamd, user="spamgate"), Phase.DATA, make_context(message=MSG, recipients=rcpts))
    await run_filter(make(spamd, per_user=True), Phase.DATA, make_context(message=MSG, recipients=rcpts))
    await run_filter(
        make(spamd, per_user=True, user="fallback"),
        Phase.DATA,
        make_context(message=MSG, recipients=("we!rd$@example.edu", "x@elsewhere.org")),
    )
    assert [r.headers.get("User") for r in spamd.requests] == ["spamgate", "carol", "fallback"]


async def test_oversize_is_skipped_but_still_stripped(spamd: FakeSpamd) -> None:
    before = metric("spamgate_spamd_skipped_total", reason="size")
    f = make(spamd, max_size=100)
    big = MSG + "x" * 200 + "\n"
    v = await run_filter(f, Phase.DATA, make_context(message=big))
    assert spamd.requests == []
    [sym] = v.symbols
    assert (sym.name, sym.score) == (SKIPPED_SIZE, 0.0)
    assert "max_size 100" in sym.detail
    assert any(r.matches("X-Spam-Status", "No, score=-100") for r in v.remove_headers)
    assert metric("spamgate_spamd_skipped_total", reason="size") == before + 1
    v = await run_filter(f, Phase.DATA, make_context(message="Subject: s\n\nsmall\n"))
    assert len(spamd.requests) == 1 and v.symbols[0].name == "SPAMD"


async def test_concurrency_is_bounded(spamd: FakeSpamd) -> None:
    spamd.hold = asyncio.Event()
    f = make(spamd, max_concurrency=2)
    tasks = [asyncio.create_task(run_filter(f, Phase.DATA, make_context(message=MSG))) for _ in range(6)]
    await spamd.wait_for_active(2)
    await asyncio.sleep(0.1)  # give the queued checks every chance to (wrongly) connect
    assert spamd.active == 2
    spamd.hold.set()
    verdicts = await asyncio.gather(*tasks)
    assert len(verdicts) == 6 and len(spamd.requests) == 6
    assert spamd.max_active == 2


# --- failures: raised for the engine's on_error ---------------------------------------


async def test_connection_refused_raises_and_counts() -> None:
    fake = await FakeSpamd().start()
    port = fake.port
    await fake.close()
    before = metric("spamgate_spamd_errors_total", kind="connect")
    f = SpamAssassinFilter("spamassassin", {"port": port}, ENV)
    with pytest.raises(SpamdError) as err:
        await run_filter(f, Phase.DATA, make_context(message=MSG))
    assert err.value.kind == "connect"
    assert metric("spamgate_spamd_errors_total", kind="connect") == before + 1


async def test_timeout_raises(spamd: FakeSpamd) -> None:
    spamd.silent = True
    before = metric("spamgate_spamd_errors_total", kind="timeout")
    with pytest.raises(SpamdError) as err:
        await run_filter(make(spamd, scan_timeout=0.2), Phase.DATA, make_context(message=MSG))
    assert err.value.kind == "timeout"
    assert metric("spamgate_spamd_errors_total", kind="timeout") == before + 1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (spamd_reply(b"", status="69 EX_UNAVAILABLE"), "spamd"),
        (b"HTTP/1.0 400 Bad Request\r\n\r\n", "protocol"),
        (spamd_reply(b"GTUBE", spam=None), "protocol"),
    ],
)
async def test_bad_answers_raise(spamd: FakeSpamd, reply: bytes, kind: str) -> None:
    spamd.reply = reply
    with pytest.raises(SpamdError) as err:
        await run_filter(make(spamd), Phase.DATA, make_context(message=MSG))
    assert err.value.kind == kind


@pytest.mark.parametrize(("on_error", "decision"), [("continue", Decision.CONTINUE), ("tempfail", Decision.TEMPFAIL)])
async def test_spamd_down_follows_on_error(on_error: str, decision: Decision) -> None:
    fake = await FakeSpamd().start()
    port = fake.port
    await fake.close()
    f = SpamAssassinFilter("spamassassin", {"port": port}, ENV)
    settings = FilterSettings(on_error=on_error)  # type: ignore[arg-type]
    run = await run_pipeline([(f, settings)], make_context(message=MSG), phases=[Phase.DATA])
    result = run.results[Phase.DATA]
    assert result.decision is decision
    assert run.symbols == ["SPAMASSASSIN_ERROR"]
    if decision is Decision.TEMPFAIL:
        assert result.reply is not None and result.reply.code == 451


async def test_gtube_score_selects_reject_and_ham_accept(spamd: FakeSpamd) -> None:
    f = make(spamd)
    spamd.reply = spamd_reply(b"GTUBE", spam="True ; 1000.0 / 5.0")
    run = await run_pipeline([f], make_context(message=MSG), phases=[Phase.DATA], thresholds=Thresholds(reject=15.0))
    assert run.action is Action.REJECT
    spamd.reply = spamd_reply(b"", spam="False ; 0.4 / 5.0")
    run = await run_pipeline([f], make_context(message=MSG), phases=[Phase.DATA], thresholds=Thresholds(reject=15.0))
    assert run.action is Action.ACCEPT and run.score == 0.4


async def test_long_rule_lists_are_cut_at_a_rule_boundary(spamd: FakeSpamd) -> None:
    names = ",".join(f"RULE_NUMBER_{i:03d}" for i in range(100)).encode()
    spamd.reply = spamd_reply(names, spam="True ; 50.0 / 5.0")
    v = await run_filter(make(spamd), Phase.DATA, make_context(message=MSG))
    [(_, value)] = v.add_headers
    assert len(value) <= 900 and value.endswith(",...")
    assert value[:-4].rsplit(",", 1)[1].startswith("RULE_NUMBER_")
    assert "RULE_NUMBER_099" in v.symbols[0].detail


def test_the_documented_example_config_is_valid() -> None:
    from spamgate.proxy.config import parse_config

    doc = (Path(__file__).parents[2] / "docs" / "spamassassin.md").read_text()
    [example] = re.findall(r"```toml\n(.*?)```", doc, re.S)
    cfg = parse_config(tomllib.loads(example), "docs/spamassassin.md")
    table = cfg.filters["spamassassin"]
    assert (table.enabled, table.on_error, table.timeout) == (True, "continue", 10.0)
    f = SpamAssassinFilter("spamassassin", table.options, ENV)
    assert f.opts == SpamAssassinOptions()  # the example shows every default
    assert set(table.options) == set(SpamAssassinOptions.model_fields) - {"user", "socket"}
