"""The transaction controller against an in-memory backend and real pipelines of tiny filters.

The integration suite proves the same replies through real SMTP and Postfix; these tests pin
each rule on its own, fast, so a change that breaks one (skipping the score reject,
dropping the postmaster exemption) fails here by name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from spamgate.filters.sdk.api import QUARANTINE_NOTE, Context, Phase, Reply, Symbol, Verdict
from spamgate.filters.sdk.runner import FilterSettings
from spamgate.proxy import replies
from spamgate.proxy.backend import BackendReply
from tests.proxy.txn_fakes import (
    OK,
    QUEUED,
    BrokenQuarantine,
    OneVerdict,
    harness,
    rejecting,
    scoring,
    timeout,
    unavailable,
)


def _stored(directory: Path, ext: str) -> list[Path]:
    return sorted(directory.glob(f"*.{ext}"))


MSG = b"Subject: hello\r\nFrom: a@example.org\r\n\r\nbody\r\n"
BLOCKED = Reply(554, "5.7.1", "Client host blocked")


async def test_score_at_reject_threshold_answers_550_and_never_sends_data() -> None:
    h = harness(scoring(15.0))  # the default reject threshold is 15: "at" counts
    await h.envelope("alice@example.edu")
    reply = await h.ctl.on_data(MSG)
    assert reply == Reply(550, "5.7.1", "Message rejected as spam (score 15.0: SPAMMY)")
    assert h.backend.verbs == ["MAIL", "RCPT", "RSET"]
    assert h.backend.messages == []
    assert h.state.txn is None and h.state.transactions == 1


async def test_score_below_reject_is_relayed_with_the_explanation_and_the_backends_own_reply() -> None:
    h = harness(scoring(7.5))
    await h.envelope("alice@example.edu")
    reply = await h.ctl.on_data(MSG)
    assert reply == QUEUED  # the backend's reply, passed through as-is
    assert h.backend.verbs == ["MAIL", "RCPT", "DATA", "DONE"]
    sent = h.backend.messages[0]
    assert b"X-Spam-Flag: YES\r\n" in sent
    assert b"tests=SPAMMY(7.5) action=add_header" in sent
    assert sent.startswith(b"Received: from client.example (unknown [192.0.2.7])")
    assert sent.endswith(MSG)


@pytest.mark.parametrize("backend_reply", [BackendReply(451, "4.3.0 try later"), BackendReply(554, "5.7.1 no")])
async def test_data_refused_by_the_backend_is_passed_through_never_250(backend_reply: BackendReply) -> None:
    h = harness(script={"data": backend_reply})
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(MSG)) == backend_reply


async def test_forged_spam_headers_from_the_client_are_removed() -> None:
    h = harness()
    await h.envelope("alice@example.edu")
    await h.ctl.on_data(b"X-Spam-Flag: NO\r\nX-Spam-Status: No\r\nSubject: x\r\n\r\nbody\r\n")
    sent = h.backend.messages[0]
    assert b"X-Spam-Flag: NO\r\n" not in sent and b"X-Spam-Status: No\r\n" not in sent
    assert b"X-Spam-Status: No, score=0.0" in sent


async def test_held_connect_reject_deferred_to_rcpt_spares_postmaster() -> None:
    h = harness(rejecting(Phase.CONNECT, BLOCKED), config={"pipeline": {"defer_rejects": True}})
    await h.ctl.on_connect()
    assert (await h.ctl.on_helo("client.example", esmtp=True)) is None
    assert (await h.ctl.on_mail("sender@example.org", [])) == OK
    assert (await h.ctl.on_rcpt("alice@example.edu", [])) == BLOCKED
    assert (await h.ctl.on_rcpt("PostMaster@example.edu", [])) == OK
    assert h.backend.commands[-1] == ("RCPT", "PostMaster@example.edu")
    assert [c for c in h.backend.commands if c[0] == "RCPT"] == [("RCPT", "PostMaster@example.edu")]
    assert (await h.ctl.on_data(MSG)) == QUEUED
    assert h.state.txn is None


async def test_held_helo_reject_answers_at_helo_and_mail_without_defer() -> None:
    h = harness(rejecting(Phase.HELO, BLOCKED))
    await h.ctl.on_connect()
    assert (await h.ctl.on_helo("bad.example", esmtp=True)) == BLOCKED
    assert (await h.ctl.on_mail("sender@example.org", [])) == BLOCKED
    assert h.backend.commands == []


async def test_exempt_recipient_may_be_a_full_address() -> None:
    h = harness(rejecting(Phase.CONNECT, BLOCKED),
                config={"pipeline": {"defer_rejects": True, "exempt_recipients": ["abuse@example.edu"]}})
    await h.ctl.on_connect()
    await h.ctl.on_mail("sender@example.org", [])
    assert (await h.ctl.on_rcpt("abuse@example.edu", [])) == OK
    assert (await h.ctl.on_rcpt("abuse@other.example", [])) == BLOCKED
    assert (await h.ctl.on_rcpt("postmaster@example.edu", [])) == BLOCKED


@pytest.mark.parametrize("stage", ["begin", "mail"])
async def test_backend_down_at_mail_is_a_4xx(stage: str) -> None:
    h = harness(script={stage: unavailable(stage)})
    assert (await h.ctl.on_mail("sender@example.org", [])) == replies.BACKEND_UNAVAILABLE
    assert h.state.txn is None


async def test_backend_refusing_mail_is_passed_through_and_the_transaction_closed() -> None:
    h = harness(script={"mail": BackendReply(550, "5.1.0 sender refused")})
    assert (await h.ctl.on_mail("sender@example.org", [])) == BackendReply(550, "5.1.0 sender refused")
    assert h.backend.verbs == ["MAIL", "DONE"] and h.state.txn is None


async def test_backend_breaking_at_rcpt_fails_the_rest_of_the_transaction_with_4xx() -> None:
    h = harness(script={"rcpt": unavailable("rcpt")})
    assert (await h.ctl.on_mail("sender@example.org", [])) == OK
    assert (await h.ctl.on_rcpt("alice@example.edu", [])) == replies.BACKEND_UNAVAILABLE
    del h.backend.script["rcpt"]
    assert (await h.ctl.on_rcpt("bob@example.edu", [])) == replies.BACKEND_UNAVAILABLE
    assert (await h.ctl.on_data(MSG)) == replies.NO_VALID_RCPT
    assert h.backend.messages == []


async def test_backend_timing_out_at_data_is_a_4xx() -> None:
    h = harness(script={"data": timeout()})
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(MSG)) == replies.BACKEND_TIMEOUT


async def test_backend_refusing_a_recipient_keeps_the_others() -> None:
    h = harness()
    await h.envelope("alice@example.edu")
    h.backend.script["rcpt"] = BackendReply(550, "5.1.1 no such user")
    assert (await h.ctl.on_rcpt("nobody@example.edu", [])) == BackendReply(550, "5.1.1 no such user")
    assert h.state.txn is not None and h.state.txn.recipients == ["alice@example.edu"]
    assert h.state.txn.rejected_rcpts == 1


async def test_quarantine_action_stores_the_message_and_resets_the_backend(tmp_path: Path) -> None:
    h = harness(scoring(9.0), config={"actions": {"quarantine": 8.0, "add_header": 6.0}}, quarantine=tmp_path)
    await h.envelope("alice@example.edu")
    reply = await h.ctl.on_data(MSG)
    assert isinstance(reply, Reply) and reply.code == 250
    assert reply.text.startswith("Ok: quarantined as ")
    qid = reply.text.rsplit(" ", 1)[1]
    assert b"X-Spam-Flag: YES" in (tmp_path / f"{qid}.eml").read_bytes()
    meta = json.loads((tmp_path / f"{qid}.json").read_text())
    assert (meta["action"], meta["recipients"], meta["reasons"]) == ("quarantine", ["alice@example.edu"], ["SPAMMY"])
    assert h.backend.verbs == ["MAIL", "RCPT", "RSET"]


async def test_quarantine_store_failure_is_451_4_3_1_and_nothing_relayed(tmp_path: Path) -> None:
    h = harness(scoring(9.0), config={"actions": {"quarantine": 8.0}}, quarantine=BrokenQuarantine(tmp_path))
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(MSG)) == replies.QUARANTINE_FULL
    assert h.backend.messages == [] and h.backend.verbs[-1] == "RSET"


async def test_quarantine_rejects_keeps_a_copy_of_rejected_spam(tmp_path: Path) -> None:
    h = harness(scoring(20.0), config={"pipeline": {"quarantine_rejects": True}}, quarantine=tmp_path)
    await h.envelope("alice@example.edu")
    reply = await h.ctl.on_data(MSG)
    assert isinstance(reply, Reply) and reply.text.startswith("Ok: quarantined as ")
    assert json.loads(_stored(tmp_path, "json")[0].read_text())["action"] == "reject"


def _asks_quarantine(ctx: Context) -> Verdict:
    ctx.notes[QUARANTINE_NOTE] = ("holder", Reply(554, "5.7.1", "Virus found"))
    return Verdict.cont(Symbol("HELD", 0.0))


@pytest.mark.parametrize(("store", "mode", "expected"), [
    (True, "enforce", "quarantined"), (False, "enforce", "refused"), (True, "observe", "relayed"),
])
async def test_a_filters_quarantine_request(tmp_path: Path, store: bool, mode: str, expected: str) -> None:
    holder = OneVerdict("holder", Phase.DATA, _asks_quarantine)
    h = harness((holder, FilterSettings(mode=mode)),  # type: ignore[arg-type]
                quarantine=tmp_path if store else None)
    await h.envelope("alice@example.edu")
    reply = await h.ctl.on_data(MSG)
    stored = _stored(tmp_path, "eml")
    if expected == "quarantined":
        assert isinstance(reply, Reply) and reply.text.startswith("Ok: quarantined as ") and len(stored) == 1
        assert h.backend.messages == []
    else:
        assert reply == (QUEUED if expected == "relayed" else Reply(554, "5.7.1", "Virus found"))
        assert stored == []


async def test_tempfail_action_answers_451_and_resets_the_backend() -> None:
    h = harness(scoring(10.0), config={"actions": {"tempfail": 9.0}})
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(MSG)) == replies.SPAM_TEMPFAIL
    assert h.backend.verbs == ["MAIL", "RCPT", "RSET"]


async def test_data_filter_verdict_is_answered_and_the_backend_reset() -> None:
    h = harness(rejecting(Phase.DATA, Reply(550, "5.7.0", "Forged sender")))
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(MSG)) == Reply(550, "5.7.0", "Forged sender")
    assert h.backend.verbs == ["MAIL", "RCPT", "RSET"]


async def test_a_bug_at_end_of_data_resets_the_backend_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    from spamgate.proxy import transaction

    def broken(*args: object) -> bytes:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(transaction, "build_final", broken)
    h = harness()
    await h.envelope("alice@example.edu")
    with pytest.raises(ZeroDivisionError):
        await h.ctl.on_data(MSG)
    # Reset (and so pooled or closed), not left open with the recipient on it for the next client.
    assert h.backend.verbs == ["MAIL", "RCPT", "RSET"]
    assert h.state.txn is None and h.state.transactions == 1


async def test_a_relayed_message_finishes_the_backend_transaction_once() -> None:
    h = harness()
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(MSG)) == QUEUED
    assert h.backend.verbs == ["MAIL", "RCPT", "DATA", "DONE"]


async def test_observe_mode_filter_never_decides_and_its_score_does_not_count() -> None:
    spam = OneVerdict("judge", Phase.DATA, Verdict.reject(Reply(550, "5.7.1", "spam"), Symbol("BAD", 50.0)))
    h = harness((spam, FilterSettings(mode="observe")))
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(MSG)) == QUEUED
    sent = h.backend.messages[0]
    assert b"X-Spamgate-Observe: judge would reject at data: 550 5.7.1 spam" in sent
    assert b"score=0.0" in sent and b"BAD(observe:50.0)" in sent


@pytest.mark.parametrize("role", ["submission", "smtps"])
async def test_submission_without_login_is_530_whatever_the_filters(role: str) -> None:
    h = harness(role=role)
    assert (await h.ctl.on_mail("sender@example.org", [])) == replies.AUTH_REQUIRED
    assert h.backend.commands == [] and h.state.txn is None
    h.state.login = "alice"
    assert (await h.ctl.on_mail("sender@example.org", [])) == OK
    assert h.backend.clients[0].login == "alice"


async def test_max_recipients() -> None:
    h = harness(config={"limits": {"max_recipients": 2}})
    await h.envelope("a@example.edu", "b@example.edu")
    assert (await h.ctl.on_rcpt("c@example.edu", [])) == replies.TOO_MANY_RECIPIENTS
    assert h.backend.verbs.count("RCPT") == 2


async def test_bare_newline_is_rejected_when_configured() -> None:
    h = harness(config={"limits": {"bare_newline": "reject"}})
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(b"Subject: x\n\nbody\r\n")) == replies.BARE_NEWLINE
    assert h.backend.verbs[-1] == "RSET" and h.backend.messages == []


async def test_bare_newline_is_normalized_by_default() -> None:
    h = harness()
    await h.envelope("alice@example.edu")
    assert (await h.ctl.on_data(b"Subject: x\n\nbody\r\n")) == QUEUED
    assert h.backend.messages[0].endswith(b"Subject: x\r\n\r\nbody\r\n")


async def test_commands_out_of_order_and_bad_addresses() -> None:
    h = harness()
    assert (await h.ctl.on_rcpt("alice@example.edu", [])) == Reply(503, "5.5.1", "Error: need MAIL command")
    assert (await h.ctl.on_data(MSG)) == replies.NO_VALID_RCPT
    assert (await h.ctl.on_mail("a\tb@example.org", [])) == replies.BAD_ADDRESS
    await h.envelope()
    assert (await h.ctl.on_rcpt("a\x7fb@example.edu", [])) == replies.BAD_ADDRESS


async def test_mail_and_rcpt_filters_answer_before_the_backend_hears_of_it() -> None:
    h = harness(rejecting(Phase.MAIL, Reply(550, "5.7.1", "Sender blocked")))
    assert (await h.ctl.on_mail("sender@example.org", [])) == Reply(550, "5.7.1", "Sender blocked")
    assert h.backend.commands == [] and h.state.txn is None
    h = harness(rejecting(Phase.RCPT, Reply(550, "5.7.1", "No relay")))
    await h.envelope()
    assert (await h.ctl.on_rcpt("alice@example.edu", [])) == Reply(550, "5.7.1", "No relay")
    assert h.backend.verbs == ["MAIL"]


async def test_rset_new_mail_and_helo_reset_the_open_backend_transaction() -> None:
    h = harness()
    await h.envelope("alice@example.edu")
    await h.ctl.abort_transaction()
    assert h.state.txn is None and h.backend.verbs[-1] == "RSET"
    await h.envelope("alice@example.edu")
    await h.envelope("bob@example.edu")
    await h.ctl.on_helo("again.example", esmtp=False)
    assert h.backend.verbs == ["MAIL", "RCPT", "RSET", "MAIL", "RCPT", "RSET", "MAIL", "RCPT", "RSET"]
    assert h.state.protocol == "SMTP"


async def test_one_summary_line_per_transaction(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spamgate.session")
    h = harness(scoring(20.0))
    await h.envelope("alice@example.edu")
    await h.ctl.on_data(MSG)
    lines = [r.getMessage() for r in caplog.records if r.name == "spamgate.session"]
    assert len(lines) == 1
    assert "from=<sender@example.org> rcpts=<alice@example.edu>" in lines[0]
    assert "score=20.00 action=reject reply='550 5.7.1 Message rejected as spam" in lines[0]
