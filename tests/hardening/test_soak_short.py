"""The soak, short: concurrent clients through spamgate in front of Postfix with the default
filter set (local_sender, headers, sender_auth, rbl against NSD), while Postfix is stopped
and started, NSD is stopped and spamgate reloads twice. Fails on any lost or duplicated
message. The full-size run is tests/bench/soak.py."""

from __future__ import annotations

import pytest

from tests.hardening.soak_core import run_soak

pytestmark = pytest.mark.integration


def test_soak_short_loses_and_duplicates_nothing() -> None:
    result = run_soak(clients=30, messages=800, with_spamd=False)
    print(result.report())
    assert result.lost == 0 and result.duplicated == 0 and result.wrongly_delivered == 0, result.report()
    # Enough mail got through to make the books mean something; how much depends on the machine's
    # speed while Postfix is down (a throughput figure, not a promise: the soak's report prints it).
    assert len(result.ledger.accepted) >= 50, result.report()
    # Every fault in the plan happened, and some mail was refused (4xx) while Postfix was down.
    assert len(result.faults) == 5, result.faults
    assert result.ledger.refused and all(why.startswith("4") or why == "connection failed"
                                         for why in result.ledger.refused.values()), result.report()
