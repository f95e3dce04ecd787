"""The pure rules of a transaction, one table each."""

from __future__ import annotations

import pytest

from spamgate.filters.sdk.api import QUARANTINE_NOTE, Decision, Reply, Symbol
from spamgate.filters.sdk.runner import PhaseResult, Scoreboard, ScoreEntry
from spamgate.filters.sdk.scoring import Action
from spamgate.proxy import replies
from spamgate.proxy.decisions import (
    EndOfData,
    auth_required,
    end_of_data,
    filter_quarantine_request,
    held_at_mail,
    held_at_rcpt,
    is_exempt,
    reasons,
    spam_reject,
)

BLOCKED = Reply(554, "5.7.1", "blocked")
HELD = PhaseResult(Decision.REJECT, BLOCKED, "rbl", ())
VIRUS = Reply(554, "5.7.1", "Virus found")


@pytest.mark.parametrize(("role", "login", "required"), [
    ("submission", None, True), ("smtps", None, True), ("submission", "alice", False), ("mx", None, False),
])
def test_auth_required(role: str, login: str | None, required: bool) -> None:
    assert auth_required(role, login) is required


def test_held_at_mail_unless_deferred() -> None:
    assert held_at_mail(HELD, defer_rejects=False) == BLOCKED
    assert held_at_mail(HELD, defer_rejects=True) is None
    assert held_at_mail(None, defer_rejects=False) is None


@pytest.mark.parametrize(("rcpt", "exempt"), [
    ("postmaster@example.org", True), ("POSTMASTER@Example.org", True), ("postmaster", True),
    ("abuse@example.org", True), ("abuse@other.example", False), ("alice@example.org", False),
    ("postmaster.x@example.org", False), ("xpostmaster@example.org", False),
    ("postmaster@x@example.org", False), ('"abuse@example.org"@evil.example', False),
])
def test_is_exempt(rcpt: str, exempt: bool) -> None:
    assert is_exempt(rcpt, ("postmaster", "Abuse@Example.org")) is exempt


def test_held_at_rcpt_spares_exempt_recipients_only() -> None:
    assert held_at_rcpt(HELD, "alice@example.org", ("postmaster",)) == BLOCKED
    assert held_at_rcpt(HELD, "postmaster@example.org", ("postmaster",)) is None
    assert held_at_rcpt(HELD, "postmaster@example.org", ()) == BLOCKED
    assert held_at_rcpt(None, "alice@example.org", ("postmaster",)) is None


def _entry(name: str, score: float, flt: str = "f", observed: bool = False) -> ScoreEntry:
    return ScoreEntry(flt, Symbol(name, score), score, observed)


def test_filter_quarantine_request() -> None:
    note = {QUARANTINE_NOTE: ("av", VIRUS)}
    assert filter_quarantine_request(note, []) == VIRUS
    assert filter_quarantine_request(note, [_entry("AV_OBS", 0.0, "av", observed=True)]) is None
    assert filter_quarantine_request(note, [_entry("X", 0.0, "other", observed=True)]) == VIRUS
    assert filter_quarantine_request({}, []) is None
    assert filter_quarantine_request({QUARANTINE_NOTE: ("av", "not a reply")}, []) is None
    assert filter_quarantine_request({QUARANTINE_NOTE: "av"}, []) is None


def test_reasons_biggest_first_positive_only() -> None:
    board = Scoreboard([_entry("A", 1.0), _entry("B", 4.0), _entry("HAM", -2.0), _entry("Z", 0.0)])
    assert reasons(board) == ["B", "A"]


def test_spam_reject_names_three_reasons_at_most() -> None:
    assert str(spam_reject(16.04, ["A", "B", "C", "D"])) == "550 5.7.1 Message rejected as spam (score 16.0: A, B, C)"
    assert str(spam_reject(15.0, [])) == "550 5.7.1 Message rejected as spam (score 15.0: score)"


@pytest.mark.parametrize(("action", "hold", "q_rejects", "can_q", "kind", "label", "reply"), [
    (Action.ACCEPT, None, False, True, EndOfData.RELAY, "accept", None),
    (Action.ADD_HEADER, None, False, True, EndOfData.RELAY, "add_header", None),
    (Action.REJECT, None, False, True, EndOfData.REFUSE, "reject", spam_reject(20.0, ["S"])),
    (Action.REJECT, None, True, True, EndOfData.QUARANTINE, "quarantine", None),
    (Action.REJECT, None, True, False, EndOfData.REFUSE, "reject", spam_reject(20.0, ["S"])),
    (Action.TEMPFAIL, None, True, True, EndOfData.REFUSE, "tempfail", replies.SPAM_TEMPFAIL),
    (Action.QUARANTINE, None, False, True, EndOfData.QUARANTINE, "quarantine", None),
    (Action.QUARANTINE, None, False, False, EndOfData.RELAY, "quarantine", None),
    (Action.ACCEPT, VIRUS, False, True, EndOfData.QUARANTINE, "quarantine", None),
    (Action.ACCEPT, VIRUS, False, False, EndOfData.REFUSE, "reject", VIRUS),
    (Action.REJECT, VIRUS, False, False, EndOfData.REFUSE, "reject", VIRUS),
])
def test_end_of_data(
    action: Action, hold: Reply | None, q_rejects: bool, can_q: bool, kind: EndOfData, label: str, reply: Reply | None
) -> None:
    plan = end_of_data(20.0, action, ["S"], hold, quarantine_rejects=q_rejects, can_quarantine=can_q)
    assert (plan.kind, plan.label, plan.reply) == (kind, label, reply)
    assert plan.action is (Action.QUARANTINE if hold is not None and can_q else action)


def test_end_of_data_summaries_of_refusals() -> None:
    plan = end_of_data(20.0, Action.ACCEPT, [], VIRUS, quarantine_rejects=False, can_quarantine=False)
    assert plan.summary == "reject (no quarantine_dir for a filter's quarantine)"
    assert end_of_data(20.0, Action.TEMPFAIL, [], None, quarantine_rejects=False, can_quarantine=True).summary == (
        "tempfail")


def test_end_of_data_quarantine_keeps_the_scores_action_for_the_record() -> None:
    plan = end_of_data(20.0, Action.REJECT, [], None, quarantine_rejects=True, can_quarantine=True)
    assert plan.action is Action.REJECT
    plan = end_of_data(0.0, Action.ACCEPT, [], VIRUS, quarantine_rejects=False, can_quarantine=True)
    assert plan.action is Action.QUARANTINE
