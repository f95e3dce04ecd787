from __future__ import annotations

from pathlib import Path

import pytest

from spamgate.filters.local_sender.filter import LocalSenderFilter
from spamgate.filters.local_sender.sender_login import (
    load_sender_login_map,
    may_send_as,
    owners,
    parse_sender_login_map,
)
from spamgate.filters.sdk.api import Decision, FilterEnv, OptionError, Phase
from spamgate.filters.sdk.testing import make_context, run_filter, run_pipeline

ENV = FilterEnv(local_domains=("example.edu",))

SPOOF = 'From: "Secretary" <secr@example.edu>\nTo: professor@example.edu\nSubject: urgent\n\nPlease buy gift cards.\n'


def make(**options: object) -> LocalSenderFilter:
    return LocalSenderFilter("local_sender", options, ENV)


# --- the sender-login map -------------------------------------------------------------


def test_map_parse_and_lookup() -> None:
    m = parse_sender_login_map(
        "# comment\n"
        "\n"
        "Info@Example.EDU   alice@example.edu, bob@example.edu  # trailing comment\n"
        "@lists.example.edu listadmin\n"
        "info@example.edu carol\n"
    )
    assert len(m) == 2
    assert owners("<INFO@example.edu>", m) == {"alice@example.edu", "bob@example.edu", "carol"}
    assert owners("any@lists.example.edu", m) == {"listadmin"}
    assert owners("other@example.edu", m) == frozenset()
    assert owners("x@y", None) == frozenset()


@pytest.mark.parametrize("bad", ["lonely@example.edu\n", "notanaddress alice\n", "user@ alice\n"])
def test_map_parse_errors_name_the_line(bad: str) -> None:
    with pytest.raises(ValueError, match=r"m\.txt:2:"):
        parse_sender_login_map("ok@example.edu alice\n" + bad, "m.txt")


def test_may_send_as_default_and_map() -> None:
    m = parse_sender_login_map("info@example.edu alice@example.edu\n@lists.example.edu bob\n")
    assert may_send_as("Alice@Example.edu", "alice@example.edu", None)
    assert not may_send_as("alice@example.edu", "bob@example.edu", None)
    assert may_send_as("alice@example.edu", "info@example.edu", m)
    assert not may_send_as("bob@example.edu", "info@example.edu", m)
    assert may_send_as("bob", "news@lists.example.edu", m)
    assert not may_send_as("bob", "bob@example.edu", m)
    assert may_send_as("bob", "bob@example.edu", m, local_domains=("example.edu",))
    assert not may_send_as("bob", "bob@elsewhere.org", m, local_domains=("example.edu",))
    assert not may_send_as("", "x@example.edu", m)
    assert not may_send_as("alice@example.edu", "", m)


def test_load_map_file(tmp_path: Path) -> None:
    p = tmp_path / "senders"
    p.write_text("info@example.edu alice@example.edu\n")
    assert owners("info@example.edu", load_sender_login_map(p)) == {"alice@example.edu"}


# --- MAIL phase -------------------------------------------------------------------------


async def test_unauthenticated_local_sender_gets_exact_553() -> None:
    v = await run_filter(make(), Phase.MAIL, make_context(Phase.MAIL, mail_from="secr@example.edu"))
    assert v.decision is Decision.REJECT
    assert str(v.reply) == "553 5.7.1 <secr@example.edu>: Sender address rejected: not logged in"


async def test_subdomain_of_local_domain_counts_as_local() -> None:
    v = await run_filter(make(), Phase.MAIL, make_context(Phase.MAIL, mail_from="x@dept.example.edu"))
    assert v.decision is Decision.REJECT


async def test_inbound_mail_from_other_domain_flows_on_mx() -> None:
    for sender in ("friend@example.org", "", "user@example.education"):
        v = await run_filter(make(), Phase.MAIL, make_context(Phase.MAIL, mail_from=sender))
        assert v.decision is Decision.CONTINUE, sender


async def test_require_auth_roles_is_gone_the_engine_does_it() -> None:
    with pytest.raises(OptionError) as e:
        make(require_auth_roles=["submission"])
    assert e.value.key == "require_auth_roles"


async def test_authenticated_own_address_ok_other_rejected() -> None:
    f = make()
    user = "alice@example.edu"
    ok = await run_filter(f, Phase.MAIL, make_context(Phase.MAIL, user=user, mail_from=user))
    assert ok.decision is Decision.CONTINUE
    bad = await run_filter(f, Phase.MAIL, make_context(Phase.MAIL, user=user, mail_from="secr@example.edu"))
    assert str(bad.reply) == f"553 5.7.1 <secr@example.edu>: Sender address rejected: not owned by user {user}"


async def test_authenticated_on_submission_is_fine() -> None:
    ctx = make_context(Phase.MAIL, role="submission", user="alice@example.edu", mail_from="alice@example.edu")
    assert (await run_filter(make(), Phase.MAIL, ctx)).decision is Decision.CONTINUE


async def test_sender_login_map_option(tmp_path: Path) -> None:
    p = tmp_path / "senders"
    p.write_text("secr@example.edu alice@example.edu\n")
    f = make(sender_login_map=str(p))
    ctx = make_context(Phase.MAIL, user="alice@example.edu", mail_from="secr@example.edu")
    assert (await run_filter(f, Phase.MAIL, ctx)).decision is Decision.CONTINUE
    ctx = make_context(Phase.MAIL, user="bob@example.edu", mail_from="secr@example.edu")
    assert (await run_filter(f, Phase.MAIL, ctx)).decision is Decision.REJECT


async def test_site_wide_map_from_auth_table_is_used(tmp_path: Path) -> None:
    p = tmp_path / "senders"
    p.write_text("secr@example.edu alice@example.edu\n")
    env = FilterEnv(local_domains=("example.edu",), sender_login_map=str(p))
    f = LocalSenderFilter("local_sender", {}, env)
    ctx = make_context(Phase.MAIL, user="alice@example.edu", mail_from="secr@example.edu")
    assert (await run_filter(f, Phase.MAIL, ctx)).decision is Decision.CONTINUE
    # The filter's own option wins over [auth] sender_login_map.
    own = tmp_path / "own"
    own.write_text("secr@example.edu carol@example.edu\n")
    f2 = LocalSenderFilter("local_sender", {"sender_login_map": str(own)}, env)
    assert (await run_filter(f2, Phase.MAIL, ctx)).decision is Decision.REJECT


async def test_null_sender_and_any_options() -> None:
    ctx = make_context(Phase.MAIL, user="alice@example.edu", mail_from="")
    assert (await run_filter(make(), Phase.MAIL, ctx)).decision is Decision.CONTINUE
    v = await run_filter(make(null_sender_ok=False), Phase.MAIL, ctx)
    assert str(v.reply) == "553 5.7.1 <>: Sender address rejected: not owned by user alice@example.edu"
    ctx = make_context(Phase.MAIL, user="alice@example.edu", mail_from="ceo@example.edu")
    assert (await run_filter(make(authenticated_senders="any"), Phase.MAIL, ctx)).decision is Decision.CONTINUE


def test_bad_options_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(OptionError) as e:
        make(from_header="maybe")
    assert e.value.key == "from_header"
    with pytest.raises(OptionError) as e:
        make(colour="red")
    assert e.value.key == "colour"
    with pytest.raises(OptionError) as e:
        make(sender_login_map=str(tmp_path / "missing"))
    assert e.value.key == "sender_login_map"
    bad = tmp_path / "bad"
    bad.write_text("just-one-field@example.edu\n")
    with pytest.raises(OptionError, match="bad:1"):
        make(sender_login_map=str(bad))


# --- DATA phase: the From: header ----------------------------------------------------------


async def test_from_header_spoof_with_external_envelope_rejected() -> None:
    ctx = make_context(Phase.DATA, mail_from="bounce@spammer.example", message=SPOOF)
    v = await run_filter(make(), Phase.DATA, ctx)
    assert v.decision is Decision.REJECT
    assert v.reply is not None and v.reply.code == 550 and v.reply.enhanced == "5.7.1"
    assert "secr@example.edu" in v.reply.text


async def test_from_header_score_mode() -> None:
    ctx = make_context(Phase.DATA, mail_from="bounce@spammer.example", message=SPOOF)
    run = await run_pipeline([make(from_header="score", from_header_score=7.5)], ctx, [Phase.DATA])
    assert run.results[Phase.DATA].reply is None
    assert run.symbols == ["LOCAL_FROM_UNAUTH"]
    assert run.score == 7.5


async def test_from_header_ok_cases() -> None:
    f = make()
    authed = make_context(Phase.DATA, user="secr@example.edu", mail_from="secr@example.edu", message=SPOOF)
    assert (await run_filter(f, Phase.DATA, authed)).decision is Decision.CONTINUE
    external = make_context(Phase.DATA, message="From: Friend <friend@example.org>\n\nhi\n")
    assert (await run_filter(f, Phase.DATA, external)).decision is Decision.CONTINUE
    no_from = make_context(Phase.DATA, message="Subject: x\n\nhi\n")
    assert (await run_filter(f, Phase.DATA, no_from)).decision is Decision.CONTINUE
    off = make_context(Phase.DATA, message=SPOOF)
    assert (await run_filter(make(from_header="off"), Phase.DATA, off)).decision is Decision.CONTINUE


async def test_authenticated_user_cannot_forge_a_colleague_in_from() -> None:
    msg = "From: <other-secr@example.edu>\nTo: professor@example.edu\n\nhi\n"
    ctx = make_context(Phase.DATA, user="secr", mail_from="secr@example.edu", message=msg)
    v = await run_filter(make(), Phase.DATA, ctx)
    assert v.decision is Decision.REJECT
    assert str(v.reply) == "550 5.7.1 <other-secr@example.edu>: From: header address not owned by user secr"
    assert [s.name for s in v.symbols] == ["LOCAL_FROM_NOT_OWNED"]
    external = make_context(Phase.DATA, user="secr", mail_from="secr@example.edu",
                            message="From: ceo@bank.example\n\nhi\n")
    assert (await run_filter(make(), Phase.DATA, external)).decision is Decision.REJECT


async def test_authenticated_from_follows_the_map_and_options(tmp_path: Path) -> None:
    p = tmp_path / "senders"
    p.write_text("info@example.edu secr\n")
    msg = 'From: "Info desk" <info@example.edu>\n\nhi\n'
    ctx = make_context(Phase.DATA, user="secr", mail_from="secr@example.edu", message=msg)
    assert (await run_filter(make(sender_login_map=str(p)), Phase.DATA, ctx)).decision is Decision.CONTINUE
    assert (await run_filter(make(), Phase.DATA, ctx)).decision is Decision.REJECT
    assert (await run_filter(make(authenticated_senders="any"), Phase.DATA, ctx)).decision is Decision.CONTINUE
    run = await run_pipeline([make(from_header="score", from_header_score=6.0)], ctx, [Phase.DATA])
    assert run.results[Phase.DATA].reply is None
    assert run.symbols == ["LOCAL_FROM_NOT_OWNED"] and run.score == 6.0


async def test_second_from_header_is_checked_too() -> None:
    msg = "From: friend@example.org\nFrom: secr@example.edu\n\nhi\n"
    v = await run_filter(make(), Phase.DATA, make_context(Phase.DATA, message=msg))
    assert v.decision is Decision.REJECT


async def test_pipeline_stops_spoof_at_mail() -> None:
    ctx = make_context(Phase.MAIL, mail_from="secr@example.edu", message=SPOOF)
    run = await run_pipeline([make()], ctx, [Phase.MAIL, Phase.DATA])
    assert Phase.DATA not in run.results
    assert str(run.results[Phase.MAIL].reply) == (
        "553 5.7.1 <secr@example.edu>: Sender address rejected: not logged in"
    )
