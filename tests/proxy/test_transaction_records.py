"""What the transaction controller records: metrics, the summary line, the trace header, what filters see.

Written against the mutants mutmut left alive after tests/proxy/test_transaction.py: each
test pins a fact an operator or a filter relies on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from spamgate.filters.sdk.api import QUARANTINE_NOTE, Context, Decision, Phase, Reply, Symbol, Verdict
from spamgate.filters.sdk.runner import FilterSettings, PhaseResult
from spamgate.proxy.backend import BackendReply
from spamgate.proxy.rdns import ClientNames
from tests.proxy.txn_fakes import OK, BrokenQuarantine, FakeRdns, Harness, OneVerdict, harness, rejecting, scoring
from tests.proxy.txn_fakes import unavailable as backend_down

MSG = b"Subject: hello\r\n\r\nbody\r\n"
LATER = Reply(451, "4.7.1", "later")
ACTIONS = ("reject", "tempfail", "accept", "add_header", "backend_tempfail", "backend_reject", "error", "quarantine")


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "spamgate.session" and "rcpts=" in r.getMessage()]


def _hold(ctx: Context) -> Verdict:
    ctx.notes[QUARANTINE_NOTE] = ("holder", Reply(554, "5.7.1", "Held"))
    return Verdict.cont()


Setup = Callable[[Path], Harness]
OUTCOMES: dict[str, tuple[Setup, str | None, str]] = {
    "score reject": (lambda p: harness(scoring(30.0)), "reject", "reject"),
    "score tempfail": (lambda p: harness(scoring(10.0), config={"actions": {"tempfail": 9.0}}), "tempfail", "tempfail"),
    "accept": (lambda p: harness(), "accept", "accept"),
    "add_header": (lambda p: harness(scoring(7.0)), "add_header", "add_header"),
    "filter reject": (lambda p: harness(rejecting(Phase.DATA, Reply(550, "5.7.1", "no"))), "reject",
                      "reject by blocker"),
    "filter tempfail": (lambda p: harness(OneVerdict("slow", Phase.DATA, Verdict.tempfail(LATER))), "tempfail",
                        "tempfail by slow"),
    "backend 451": (lambda p: harness(script={"data": BackendReply(451, "4.3.0 later")}), "backend_tempfail",
                    "backend_tempfail"),
    "backend 500": (lambda p: harness(script={"data": BackendReply(500, "5.0.0 no")}), "backend_reject",
                    "backend_reject"),
    "backend down": (lambda p: harness(script={"data": backend_down("data")}), "error", "backend_error"),
    "bare newline": (lambda p: harness(config={"limits": {"bare_newline": "reject"}}), None, "reject_bare_newline"),
    "quarantine": (lambda p: harness(scoring(9.0), config={"actions": {"quarantine": 8.0}}, quarantine=p),
                   "quarantine", "quarantine id="),
    "quarantine full": (lambda p: harness(scoring(9.0), config={"actions": {"quarantine": 8.0}},
                                          quarantine=BrokenQuarantine(p)), "tempfail", "tempfail (quarantine failed)"),
    "hold, no store": (lambda p: harness(OneVerdict("holder", Phase.DATA, _hold)), "reject",
                       "reject (no quarantine_dir for a filter's quarantine)"),
}


@pytest.mark.parametrize("case", OUTCOMES)
async def test_each_outcome_counts_once_under_its_action_and_logs_it(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    setup, label, summary = OUTCOMES[case]
    caplog.set_level(logging.INFO, logger="spamgate.session")
    h = setup(tmp_path)
    await h.envelope("alice@example.edu")
    before = {a: _count("spamgate_transactions_total", action=a) for a in ACTIONS}
    body = b"Subject: x\n\nbody\r\n" if case == "bare newline" else MSG
    await h.ctl.on_data(body)
    grew = {a for a, n in before.items() if _count("spamgate_transactions_total", action=a) == n + 1}
    assert grew == ({label} if label else set())
    [line] = _summaries(caplog)
    assert f"action={summary}" in line


async def test_the_summary_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spamgate.session")
    h = harness(script={"data": BackendReply(250, "2.0.0 Ok\nqueued as X1")})
    await h.envelope("alice@example.edu", "bob@example.edu")
    await h.ctl.on_data(MSG)
    [line] = _summaries(caplog)
    assert line.startswith("client=192.0.2.7 helo='client.example' from=<sender@example.org> "
                           "rcpts=<alice@example.edu>,<bob@example.edu> rejected_rcpts=0 size=24 score=0.00 "
                           "action=accept reply='250 2.0.0 Ok queued as X1' duration=")


async def test_rejected_recipients_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spamgate.session")
    no = Reply(550, "5.7.1", "no")
    h = harness(OneVerdict("picky", Phase.RCPT, lambda ctx: Verdict.reject(no) if ctx.envelope.rcpt == "x@a.example"
                           else Verdict.cont()), config={"pipeline": {"defer_rejects": True}})
    await h.ctl.on_mail("sender@example.org", [])
    # Each kind of refusal after another one, so that each is seen adding to the count.
    h.backend.script["rcpt"] = BackendReply(550, "5.1.1 unknown")
    await h.ctl.on_rcpt("y@a.example", [])  # the backend
    del h.backend.script["rcpt"]
    assert (await h.ctl.on_rcpt("x@a.example", [])) == no  # the filter
    h.state.held = PhaseResult(Decision.REJECT, no, "connect_filter", ())
    assert (await h.ctl.on_rcpt("x@a.example", [])) == no  # the held reject
    assert (await h.ctl.on_rcpt("postmaster@a.example", [])) == OK
    h.backend.script["rcpt"] = BackendReply(550, "5.1.1 unknown")
    await h.ctl.on_rcpt("postmaster@b.example", [])  # the backend again
    await h.ctl.on_data(MSG)
    [line] = _summaries(caplog)
    assert "rejected_rcpts=4 " in line and "rcpts=<postmaster@a.example> " in line


async def test_max_recipients_is_counted_as_a_limit() -> None:
    h = harness(config={"limits": {"max_recipients": 1}})
    await h.envelope("a@example.edu")
    before = _count("spamgate_limit_exceeded_total", limit="max_recipients")
    await h.ctl.on_rcpt("b@example.edu", [])
    assert _count("spamgate_limit_exceeded_total", limit="max_recipients") == before + 1


async def test_filters_see_the_phase_the_envelope_and_the_message() -> None:
    seen: list[tuple[str, str | None, str | None, bool, bool, tuple[str, ...]]] = []

    def look(ctx: Context) -> Verdict:
        e = ctx.envelope
        seen.append((ctx.phase.value, e.mail_from, e.rcpt, e.smtputf8, ctx.message is not None, e.recipients))
        return Verdict.cont()

    h = harness(*(OneVerdict(f"look_{p.value}", p, look) for p in Phase if p is not Phase.AUTH))
    await h.ctl.on_connect()
    await h.ctl.on_helo("client.example", esmtp=True)
    assert (await h.ctl.on_mail("s@example.org", ["SMTPUTF8", "BODY=8BITMIME"])) == OK
    assert (await h.ctl.on_rcpt("r@example.edu", ["NOTIFY=NEVER"])) == OK
    await h.ctl.on_data(MSG)
    assert seen == [
        ("connect", None, None, False, False, ()),
        ("helo", None, None, False, False, ()),
        ("mail", "s@example.org", None, True, False, ()),
        ("rcpt", "s@example.org", "r@example.edu", True, False, ()),
        ("data", "s@example.org", None, True, True, ("r@example.edu",)),
    ]
    assert h.backend.commands[:2] == [("MAIL", "s@example.org"), ("RCPT", "r@example.edu")]
    assert h.backend.options == [["SMTPUTF8", "BODY=8BITMIME"], ["NOTIFY=NEVER"]]


async def test_reverse_names_reach_the_trace_header_and_the_backend() -> None:
    rdns = FakeRdns(ClientNames(reverse="ptr.example", verified="mail.example"))
    h = harness(rdns=rdns)
    await h.ctl.on_connect()
    assert rdns.asked == ["192.0.2.7"]
    h.state.tls, h.state.login = "using TLSv1.3 with cipher X", "alice"
    await h.envelope("alice@example.edu")
    await h.ctl.on_data(MSG)
    assert h.backend.clients[0].name == "mail.example" and h.backend.clients[0].reverse_name == "ptr.example"
    received = h.backend.messages[0].split(b";")[0].decode()
    assert received == ("Received: from client.example (mail.example [192.0.2.7])\r\n"
                        "\t(using TLSv1.3 with cipher X)\r\n\t(authenticated sender)\r\n"
                        "\tby gate.test (spamgate) with ESMTPSA id s1\r\n"
                        "\tfor <alice@example.edu>")


async def test_the_trace_header_names_no_recipient_when_there_are_several() -> None:
    h = harness()
    await h.envelope("a@example.edu", "b@example.edu")
    await h.ctl.on_data(MSG)
    assert b"for <" not in h.backend.messages[0].split(b";")[0]


async def test_a_backend_broken_at_rcpt_fails_data_with_its_4xx() -> None:
    h = harness()
    await h.envelope("alice@example.edu")
    h.backend.script["rcpt"] = backend_down("rcpt")
    broken = await h.ctl.on_rcpt("bob@example.edu", [])
    assert isinstance(broken, Reply) and broken.code == 451
    assert (await h.ctl.on_data(MSG)) == broken
    assert h.backend.messages == [] and h.state.txn is None


async def test_transactions_are_counted_per_session() -> None:
    h = harness()
    for _ in range(2):
        await h.envelope("alice@example.edu")
        await h.ctl.on_data(MSG)
    assert h.state.transactions == 2


async def test_the_quarantine_record(tmp_path: Path) -> None:
    h = harness(scoring(9.0), config={"actions": {"quarantine": 8.0}}, quarantine=tmp_path)
    await h.envelope("alice@example.edu")
    reply = await h.ctl.on_data(MSG)
    assert str(reply).startswith("250 2.0.0 Ok: quarantined as ")
    meta = json.loads(sorted(tmp_path.glob("*.json"))[0].read_text())  # noqa: ASYNC240 (tmp_path, tiny)
    assert {k: meta[k] for k in ("session_id", "client_ip", "mail_from", "score")} == {
        "session_id": "s1", "client_ip": "192.0.2.7", "mail_from": "sender@example.org", "score": 9.0}


async def test_several_observed_verdicts_are_joined_in_one_header() -> None:
    def would(name: str) -> OneVerdict:
        return OneVerdict(name, Phase.DATA, Verdict.reject(Reply(550, "5.7.1", name), Symbol(name.upper(), 1.0)))

    h = harness((would("one"), FilterSettings(mode="observe", order=1)),  # type: ignore[arg-type]
                (would("two"), FilterSettings(mode="observe", order=2)))
    await h.envelope("alice@example.edu")
    await h.ctl.on_data(MSG)
    assert (b"X-Spamgate-Observe: one would reject at data: 550 5.7.1 one; two would reject at data: 550 5.7.1 two\r\n"
            in h.backend.messages[0])

