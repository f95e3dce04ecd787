"""ratelimit: per-IP and per-user windows, the limit named in the log, the SMTP penalty box."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from spamgate.filters.ratelimit.filter import RateLimitFilter
from spamgate.filters.sdk.api import AuthAttempt, Decision, FilterEnv, Phase, RefusalObserver, SessionInfo
from spamgate.filters.sdk.metrics import MemoryMetrics
from spamgate.filters.sdk.state import MemoryStore, StateError
from spamgate.filters.sdk.testing import make_context
from spamgate.filters.services.state_keys import digest

# One metrics handle for every filter of this module, as the engine gives one to all filters.
METRICS = MemoryMetrics()


def make(**options: Any) -> RateLimitFilter:
    return RateLimitFilter("ratelimit", options, FilterEnv(metrics=METRICS))


async def test_ip_connections_per_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "spamgate.filters.ratelimit")
    flt = make(ip_connections_per_minute=2)
    ctx = make_context(Phase.CONNECT, peer_ip="192.0.2.1")
    assert [(await flt.check(Phase.CONNECT, ctx)).decision for _ in range(3)] == [
        Decision.CONTINUE, Decision.CONTINUE, Decision.TEMPFAIL]
    v = await flt.check(Phase.CONNECT, ctx)
    assert str(v.reply) == "421 4.7.0 Too many connections, slow down"
    assert "limit=ip_connections_per_minute" in caplog.text
    # Another client has its own counter.
    assert (await flt.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.2"))).decision \
        is Decision.CONTINUE


async def test_messages_and_recipients_per_hour() -> None:
    flt = make(ip_messages_per_hour=1, ip_recipients_per_hour=2)
    mail = make_context(Phase.MAIL, peer_ip="192.0.2.1")
    assert (await flt.check(Phase.MAIL, mail)).decision is Decision.CONTINUE
    v = await flt.check(Phase.MAIL, mail)
    assert str(v.reply) == "451 4.7.1 Too many messages, try again later"
    rcpt = make_context(Phase.RCPT, peer_ip="192.0.2.1")
    results = [(await flt.check(Phase.RCPT, rcpt)).reply for _ in range(3)]
    assert results[:2] == [None, None] and str(results[2]) == "451 4.7.1 Too many recipients, try again later"


async def test_users_are_counted_per_user_not_per_ip() -> None:
    flt = make(ip_messages_per_hour=1, user_messages_per_hour=3, user_connections_per_minute=1)
    before = METRICS.value("spamgate_ratelimit_hits_total", "user_messages_per_hour")
    for ip in ("192.0.2.1", "198.51.100.1", "203.0.113.1"):
        assert (await flt.check(Phase.MAIL, make_context(Phase.MAIL, peer_ip=ip, user="alice"))).decision \
            is Decision.CONTINUE
    v = await flt.check(Phase.MAIL, make_context(Phase.MAIL, peer_ip="192.0.2.9", user="alice"))
    assert v.decision is Decision.TEMPFAIL
    assert METRICS.value("spamgate_ratelimit_hits_total", "user_messages_per_hour") == before + 1
    login = AuthAttempt("PLAIN", "bob", True)
    ctx = make_context(Phase.AUTH, auth=login)
    assert (await flt.check(Phase.AUTH, ctx)).decision is Decision.CONTINUE
    assert (await flt.check(Phase.AUTH, ctx)).decision is Decision.TEMPFAIL
    failed = make_context(Phase.AUTH, auth=AuthAttempt("PLAIN", "bob", False))
    assert (await flt.check(Phase.AUTH, failed)).decision is Decision.CONTINUE  # failures are the engine's box


async def test_penalty_box_after_repeated_refusals() -> None:
    flt = make(ip_recipients_per_hour=1, penalty_after=2, penalty_seconds=60)
    rcpt = make_context(Phase.RCPT, peer_ip="192.0.2.50")
    await flt.check(Phase.RCPT, rcpt)
    await flt.check(Phase.RCPT, rcpt)  # refusal 1
    connect = make_context(Phase.CONNECT, peer_ip="192.0.2.50")
    assert (await flt.check(Phase.CONNECT, connect)).decision is Decision.CONTINUE
    await flt.check(Phase.RCPT, rcpt)  # refusal 2: boxed
    v = await flt.check(Phase.CONNECT, connect)
    assert str(v.reply) == "421 4.7.0 Too many rejected commands, try again later"
    assert await flt.store.get("pbox:smtp:box:" + digest("192.0.2.50")) == "1"  # its own key space


async def test_other_refusals_fill_the_penalty_box_unless_own_only() -> None:
    flt = make(penalty_after=3, penalty_seconds=60, exempt_networks=["127.0.0.0/8"])
    assert isinstance(flt, RefusalObserver)
    client = SessionInfo("s1", "192.0.2.60")
    connect = make_context(Phase.CONNECT, peer_ip="192.0.2.60")
    await flt.refused(Phase.RCPT, 550, client)  # the backend's unknown user
    await flt.refused(Phase.RCPT, 554, client)  # relay access denied
    assert (await flt.check(Phase.CONNECT, connect)).decision is Decision.CONTINUE
    # Not counted: a logged-in user's, an exempt network's.
    await flt.refused(Phase.RCPT, 550, SessionInfo("s2", "192.0.2.60", authenticated_user="alice"))
    await flt.refused(Phase.RCPT, 550, SessionInfo("s3", "127.0.0.5"))
    assert (await flt.check(Phase.CONNECT, connect)).decision is Decision.CONTINUE
    await flt.refused(Phase.DATA, 550, client)  # spam at end of DATA: the third
    v = await flt.check(Phase.CONNECT, connect)
    assert str(v.reply) == "421 4.7.0 Too many rejected commands, try again later"
    own = make(penalty_after=1, penalty_counts="own")
    for _ in range(3):
        await own.refused(Phase.RCPT, 550, SessionInfo("s4", "192.0.2.61"))
    assert (await own.check(Phase.CONNECT, make_context(Phase.CONNECT, peer_ip="192.0.2.61"))).decision \
        is Decision.CONTINUE
    off = make()  # no penalty box: nothing stored at all
    await off.refused(Phase.RCPT, 550, client)
    assert await off.store.get("pbox:smtp:n:" + digest("192.0.2.60")) is None


async def test_a_refusal_the_store_cannot_count_is_logged_not_raised() -> None:
    flt = make(penalty_after=1)
    flt.store = BrokenStore()
    before = METRICS.value("spamgate_ratelimit_state_errors_total")
    await flt.refused(Phase.RCPT, 550, SessionInfo("s1", "192.0.2.62"))
    assert METRICS.value("spamgate_ratelimit_state_errors_total") == before + 1


async def test_exempt_networks_and_no_limits() -> None:
    flt = make(ip_connections_per_minute=1, exempt_networks=["127.0.0.0/8"])
    ctx = make_context(Phase.CONNECT, peer_ip="127.0.0.1")
    open_flt = make()
    for _ in range(5):
        assert (await flt.check(Phase.CONNECT, ctx)).decision is Decision.CONTINUE
        assert (await open_flt.check(Phase.MAIL, make_context(Phase.MAIL))).decision is Decision.CONTINUE


class BrokenStore(MemoryStore):
    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        raise StateError("redis incr: refused")


async def test_state_errors() -> None:
    flt = make(ip_messages_per_hour=1)
    flt.store = BrokenStore()
    assert (await flt.check(Phase.MAIL, make_context(Phase.MAIL))).decision is Decision.CONTINUE
    strict = make(ip_messages_per_hour=1, on_state_error="tempfail")
    strict.store = BrokenStore()
    v = await strict.check(Phase.MAIL, make_context(Phase.MAIL))
    assert v.decision is Decision.TEMPFAIL and str(v.reply).startswith("451 4.3.0")
