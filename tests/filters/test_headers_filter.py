"""The headers filter: options, scores, rejects, through the same runner as the engine."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from spamgate.filters.headers.filter import DEFAULT_SCORES, HeadersFilter
from spamgate.filters.sdk.api import Decision, FilterEnv, OptionError, Phase
from spamgate.filters.sdk.testing import make_context, run_filter, run_pipeline

ENV = FilterEnv(hostname="mx.example.edu", local_domains=("example.edu",))
DATE = format_datetime(datetime.now(UTC))


def message(from_: str = "Alice <alice@example.org>", extra: str = "") -> str:
    return (
        f"From: {from_}\nTo: bob@example.edu\nSubject: hi\nDate: {DATE}\n"
        f"Message-ID: <1@example.org>\n{extra}\nbody\n"
    )


async def test_clean_message_continues_without_symbols() -> None:
    flt = HeadersFilter("headers", {}, ENV)
    verdict = await run_filter(flt, Phase.DATA, make_context(message=message()))
    assert verdict.decision is Decision.CONTINUE
    assert verdict.symbols == ()


async def test_spoof_scores_with_default_and_configured_scores() -> None:
    flt = HeadersFilter("headers", {"scores": {"FROM_LOCAL_UNAUTH": 7.5}}, ENV)
    ctx = make_context(message=message("Secretary <secr@example.edu>", "Reply-To: x@evil.test\n"))
    verdict = await run_filter(flt, Phase.DATA, ctx)
    scores = {s.name: s.score for s in verdict.symbols}
    expected = {"FROM_LOCAL_UNAUTH": 7.5, "REPLYTO_FOREIGN_LOCAL_FROM": DEFAULT_SCORES["REPLYTO_FOREIGN_LOCAL_FROM"]}
    assert scores == expected


async def test_reject_symbols_reject_with_550() -> None:
    flt = HeadersFilter("headers", {"reject_symbols": ["DISPLAY_NAME_ADDRESS_MISMATCH"]}, ENV)
    ctx = make_context(message=message('"rector@example.edu" <x@evil.test>'))
    verdict = await run_filter(flt, Phase.DATA, ctx)
    assert verdict.decision is Decision.REJECT
    assert verdict.reply is not None and verdict.reply.code == 550 and verdict.reply.enhanced == "5.7.1"
    assert "DISPLAY_NAME_ADDRESS_MISMATCH" in verdict.reply.text


async def test_authenticated_user_may_use_a_local_from() -> None:
    flt = HeadersFilter("headers", {}, ENV)
    ctx = make_context(message=message("Secretary <secr@example.edu>"), user="secr")
    assert (await run_filter(flt, Phase.DATA, ctx)).symbols == ()


async def test_protected_names_option() -> None:
    flt = HeadersFilter("headers", {"protected_names": ["Rector"]}, ENV)
    ctx = make_context(message=message("Office of the Rector <rector@evil.test>"))
    assert [s.name for s in (await run_filter(flt, Phase.DATA, ctx)).symbols] == ["DISPLAY_NAME_PROTECTED"]


async def test_our_hosts_default_to_the_server_hostname() -> None:
    flt = HeadersFilter("headers", {}, ENV)
    forged = f"Received: from x by MX.example.edu.; {DATE}\n"
    ctx = make_context(message=forged + message())
    assert [s.name for s in (await run_filter(flt, Phase.DATA, ctx)).symbols] == ["RECEIVED_FORGED_LOCAL"]


async def test_pipeline_sums_header_scores() -> None:
    flt = HeadersFilter("headers", {}, ENV)
    ctx = make_context(message="Subject: x\n\nno from, no date\n")
    run = await run_pipeline([flt], ctx, phases=[Phase.DATA])
    assert set(run.symbols) == {"MISSING_FROM", "MISSING_DATE", "MISSING_MESSAGE_ID"}
    assert run.score == sum(DEFAULT_SCORES[s] for s in ("MISSING_FROM", "MISSING_DATE", "MISSING_MESSAGE_ID"))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"scores": {"NO_SUCH": 1.0}}, "scores"),
        ({"reject_symbols": ["NO_SUCH"]}, "reject_symbols"),
        ({"max_received": 0}, "max_received"),
        ({"bogus": 1}, "bogus"),
        ({"our_hosts": [" "]}, "our_hosts"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(OptionError) as err:
        HeadersFilter("headers", options, ENV)
    assert err.value.key == key


async def test_other_phases_and_missing_message_continue() -> None:
    flt = HeadersFilter("headers", {}, ENV)
    assert (await run_filter(flt, Phase.DATA, make_context(message=None))).symbols == ()
    assert flt.phases == frozenset({Phase.DATA})
