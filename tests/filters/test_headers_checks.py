"""Every header check fires on its crafted message and stays silent on a clean one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spamgate.filters.headers.checks import StructureLimits, parse_fields
from spamgate.filters.headers.filter import DEFAULT_SCORES, check_message
from spamgate.filters.headers.spoof import SpoofFacts
from spamgate.filters.sdk.testing import canonical

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DATE = format_datetime(NOW - timedelta(minutes=5))

CLEAN = f"""\
Received: from mail.example.org (mail.example.org [192.0.2.1])
\tby relay.example.org with ESMTPS id 123; {DATE}
From: Alice Example <alice@example.org>
To: Bob <bob@example.edu>
Reply-To: alice@example.org
Subject: lunch?
Date: {DATE}
Message-ID: <123@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello Bob.
"""

LOCAL_DOMAINS = ("example.edu",)


def is_local(domain: str | None) -> bool:
    return bool(domain) and any(domain == d or str(domain).endswith("." + d) for d in LOCAL_DOMAINS)


def facts(authenticated: bool = False) -> SpoofFacts:
    return SpoofFacts(
        authenticated=authenticated,
        is_local=is_local,
        protected_names=("Secretary", "IT Helpdesk", "Rector"),
        our_hosts=("mx.example.edu",),
        max_received=5,
    )


def hits(message: str | bytes, *, smtputf8: bool = False, authenticated: bool = False) -> set[str]:
    raw = canonical(message)
    end = raw.find(b"\r\n\r\n")
    header_bytes = raw[: end + 4] if end >= 0 else raw
    found = check_message(
        header_bytes, smtputf8=smtputf8, facts=facts(authenticated), limits=StructureLimits(), now=NOW
    )
    return {h.symbol for h in found}


def replace(header: str, new: str | None) -> str:
    """CLEAN with every ``header`` line replaced by ``new`` (or removed)."""
    out = []
    for line in CLEAN.split("\n"):
        if line.lower().startswith(header.lower() + ":"):
            if new is not None:
                out.append(new)
            continue
        out.append(line)
    return "\n".join(out)


def add(*lines: str) -> str:
    head, body = CLEAN.split("\n\n", 1)
    return head + "\n" + "\n".join(lines) + "\n\n" + body


def test_clean_message_has_no_hits() -> None:
    assert hits(CLEAN) == set()


CASES: list[tuple[str, str]] = [
    ("MISSING_FROM", replace("From", None)),
    ("MULTIPLE_FROM", add("From: eve@example.org")),
    ("MISSING_DATE", replace("Date", None)),
    ("MULTIPLE_DATE", add(f"Date: {DATE}")),
    ("MISSING_SUBJECT", replace("Subject", None)),
    ("MULTIPLE_SUBJECT", add("Subject: again")),
    ("MISSING_MESSAGE_ID", replace("Message-ID", None)),
    ("DATE_INVALID", replace("Date", "Date: yesterday-ish")),
    ("DATE_IN_FUTURE", replace("Date", f"Date: {format_datetime(NOW + timedelta(days=3))}")),
    ("DATE_IN_PAST", replace("Date", f"Date: {format_datetime(NOW - timedelta(days=60))}")),
    ("MALFORMED_ADDRESS_HEADER", replace("To", "To: bob@")),
    ("MALFORMED_ADDRESS_HEADER", replace("From", "From: Alice <alice@example.org")),
    ("HEADER_NO_COLON", add("This line has no colon")),
    ("HEADER_LINE_TOO_LONG", add("X-Long: " + "a" * 1000)),
    ("FROM_LOCAL_UNAUTH", replace("From", "From: Secretary <secr@example.edu>")),
    ("DISPLAY_NAME_ADDRESS_MISMATCH", replace("From", 'From: "ceo@example.edu" <x@evil.test>')),
    ("DISPLAY_NAME_PROTECTED", replace("From", "From: IT Helpdesk <helpdesk@evil.test>")),
    ("DISPLAY_NAME_PROTECTED", replace("From", "From: =?utf-8?q?The_Rector?= <r@evil.test>")),
    ("RECEIVED_TOO_MANY", add(*[f"Received: from h{i} by h{i + 1}; {DATE}" for i in range(6)])),
]


@pytest.mark.parametrize(("symbol", "message"), CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(CASES)])
def test_each_check_fires_on_its_crafted_message(symbol: str, message: str) -> None:
    assert symbol in DEFAULT_SCORES
    assert symbol in hits(message)


def test_every_symbol_has_a_crafted_case() -> None:
    covered = {s for s, _ in CASES} | {
        "HEADER_8BIT_NO_SMTPUTF8", "REPLYTO_FOREIGN_LOCAL_FROM", "RECEIVED_FORGED_LOCAL",
    }
    assert covered == set(DEFAULT_SCORES)


def test_raw_8bit_header_needs_smtputf8() -> None:
    msg = replace("Subject", "Subject: Grüße").encode("utf-8")
    assert "HEADER_8BIT_NO_SMTPUTF8" in hits(msg)
    assert "HEADER_8BIT_NO_SMTPUTF8" not in hits(msg, smtputf8=True)


def test_reply_to_foreign_only_matters_when_from_is_local() -> None:
    local = replace("From", "From: Secretary <secr@example.edu>")
    assert "REPLYTO_FOREIGN_LOCAL_FROM" in hits(local.replace("Reply-To: alice@example.org", "Reply-To: x@evil.test"))
    assert "REPLYTO_FOREIGN_LOCAL_FROM" not in hits(
        local.replace("Reply-To: alice@example.org", "Reply-To: other@sub.example.edu")
    )
    assert "REPLYTO_FOREIGN_LOCAL_FROM" not in hits(CLEAN.replace("alice@example.org", "x@evil.test"))


def test_from_local_is_fine_when_authenticated() -> None:
    local = replace("From", "From: Secretary <secr@example.edu>")
    assert "FROM_LOCAL_UNAUTH" not in hits(local, authenticated=True)


def test_display_name_equal_to_address_is_fine() -> None:
    assert hits(replace("From", 'From: "alice@example.org" <Alice@Example.org>')) == set()


def test_protected_name_from_a_local_domain_is_fine() -> None:
    msg = replace("From", "From: IT Helpdesk <helpdesk@example.edu>")
    assert "DISPLAY_NAME_PROTECTED" not in hits(msg, authenticated=True)


def test_protected_name_matches_whole_words_only() -> None:
    assert "DISPLAY_NAME_PROTECTED" not in hits(replace("From", "From: Secretarybird Fan <f@evil.test>"))
    assert "DISPLAY_NAME_PROTECTED" in hits(replace("From", "From: the secretary's office <f@evil.test>"))


def test_forged_received_only_counts_at_the_top() -> None:
    forged = f"Received: from trusted.example.edu by mx.example.edu with ESMTP; {DATE}"
    assert "RECEIVED_FORGED_LOCAL" in hits(forged + "\n" + CLEAN)
    # our own Received further down: mail we sent came back (e.g. a mailing list echo)
    echo = f"Received: from list.example.org by list.example.org; {DATE}\n" + forged + "\n" + CLEAN
    assert "RECEIVED_FORGED_LOCAL" not in hits(echo)
    assert "RECEIVED_FORGED_LOCAL" not in hits(forged + "\n" + CLEAN, authenticated=True)


def test_continuation_lines_are_unfolded() -> None:
    parsed = parse_fields(canonical("Subject: one\n two\n\tthree\nTo: a@b.c\n\n"))
    assert parsed.get_all("subject") == ["one two three"]
    assert parsed.no_colon == ()


def test_group_syntax_is_a_valid_address_header() -> None:
    assert hits(replace("To", "To: undisclosed-recipients:;")) == set()


# -- the plain-mailbox fast path ---------------------------------------------------------------

_ATEXT = "abcXYZ019!#$%&'*+/^_`{|}~-"
_atom = st.text(st.sampled_from(_ATEXT), min_size=1, max_size=6)
_label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,4}[A-Za-z0-9])?", fullmatch=True)
_addr = st.builds(lambda loc, dom: ".".join(loc) + "@" + ".".join(dom),
                  st.lists(_atom, min_size=1, max_size=3), st.lists(_label, min_size=1, max_size=3))
_phrase = st.one_of(
    st.lists(_atom, min_size=1, max_size=3).map(" ".join),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters='"\\'),
            min_size=1, max_size=12).map(lambda t: f'"{t}"'),
)
_mailbox = st.one_of(_addr, st.builds(lambda p, sp, a: f"{p}{sp}<{a}>", _phrase, st.sampled_from(["", " "]), _addr),
                     _addr.map(lambda a: f"<{a}>"))
_plain = st.builds(lambda boxes, sep: sep.join(boxes), st.lists(_mailbox, min_size=1, max_size=3),
                   st.sampled_from([",", ", ", " ,", " , "]))
# Near misses: the same values with one character put in, taken out or changed.
_noise = st.sampled_from([*' .,;:<>@"\\()[]\t=?éa', "=?utf-8?q?x?=", ".."])


@st.composite
def _near_miss(draw: st.DrawFn) -> str:
    value = draw(_plain)
    at = draw(st.integers(0, len(value)))
    how = draw(st.sampled_from(["insert", "delete", "replace"]))
    noise = draw(_noise)
    if how == "insert":
        return value[:at] + noise + value[at:]
    if how == "delete":
        return value[:at] + value[at + 1 :]
    return value[:at] + noise + value[at + 1 :]


@settings(max_examples=500, deadline=None)
@given(value=st.one_of(_plain, _near_miss()), name=st.sampled_from(["From", "To", "Cc", "Reply-To"]))
def test_the_fast_path_never_passes_what_the_parser_would_flag(value: str, name: str) -> None:
    from spamgate.filters.headers import checks

    if checks._PLAIN_MAILBOXES.fullmatch(value):
        assert checks._parsed_problem(name, value) is None, value


@pytest.mark.parametrize("value", [
    "alice@example.org", "<alice@example.org>", "Alice Example <alice@example.org>", 'Bob <bob@example.edu>',
    '"Doe, John" <j.doe@example.org>', "a@example.org, Bob <b@example.org>",
])  # fmt: skip
def test_plain_mailboxes_take_the_fast_path(value: str) -> None:
    from spamgate.filters.headers import checks

    assert checks._PLAIN_MAILBOXES.fullmatch(value) and checks._address_problem("From", value) is None


@pytest.mark.parametrize(("value", "problem"), [
    ("John Q. Public <jqp@example.org>", "period in 'phrase'"), ("a..b@example.org", "local-part"),
    (", a@example.org", "empty element"), ("bob@", "unparsable"), ("Alice <alice@example.org", ""),
])  # fmt: skip
def test_what_the_fast_path_leaves_out_still_gets_the_parsers_verdict(value: str, problem: str) -> None:
    from spamgate.filters.headers import checks

    assert not checks._PLAIN_MAILBOXES.fullmatch(value)
    found = checks._address_problem("From", value)
    assert found is not None and problem in found, found
