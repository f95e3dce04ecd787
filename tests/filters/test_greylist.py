"""greylist: triplets, delay, retry window, auto-allowlist, skips and state-store failures."""

from __future__ import annotations

from typing import Any

import pytest

from spamgate.filters.greylist.filter import GreylistFilter, dnswl_query
from spamgate.filters.sdk.api import Decision, FilterEnv, OptionError, Phase
from spamgate.filters.sdk.metrics import MemoryMetrics
from spamgate.filters.sdk.state import MemoryStore, StateError
from spamgate.filters.sdk.testing import FakeClock, make_context

# One metrics handle for every filter of this module, as the engine gives one to all filters.
METRICS = MemoryMetrics()


def make(store: Any = None, **options: Any) -> tuple[GreylistFilter, FakeClock]:
    flt = GreylistFilter("greylist", {"spf": False, "delay": 60, **options}, FilterEnv(metrics=METRICS))
    if store is not None:
        flt.store = store
    clock = FakeClock(1_700_000_000.0)
    flt.clock = clock
    return flt, clock


def rcpt(ip: str = "192.0.2.10", sender: str = "a@example.org", to: str = "bob@example.edu", **kw: Any) -> Any:
    return make_context(Phase.RCPT, peer_ip=ip, mail_from=sender, recipients=(to,), **kw)


def count(result: str) -> float:
    return METRICS.value("spamgate_greylist_results_total", result)


async def test_first_sight_is_greylisted_with_a_countdown_then_passes() -> None:
    flt, clock = make()
    before = count("greylisted")
    v = await flt.check(Phase.RCPT, rcpt())
    assert v.decision is Decision.TEMPFAIL and str(v.reply) == "451 4.7.1 Greylisted, please try again in 60 seconds"
    clock.now += 45
    v = await flt.check(Phase.RCPT, rcpt())
    assert str(v.reply) == "451 4.7.1 Greylisted, please try again in 15 seconds"
    clock.now += 15
    assert (await flt.check(Phase.RCPT, rcpt())).decision is Decision.CONTINUE
    assert count("greylisted") == before + 2
    # The same client network (/24), sender and recipient: known now, even from .77.
    assert (await flt.check(Phase.RCPT, rcpt(ip="192.0.2.77"))).decision is Decision.CONTINUE
    # Another recipient is another triplet.
    assert (await flt.check(Phase.RCPT, rcpt(to="carol@example.edu"))).decision is Decision.TEMPFAIL
    # Another /24 too, and IPv6 clients are grouped by /64.
    assert (await flt.check(Phase.RCPT, rcpt(ip="192.0.3.10"))).decision is Decision.TEMPFAIL


async def test_ipv6_networks_are_slash_64() -> None:
    flt, clock = make()
    assert (await flt.check(Phase.RCPT, rcpt(ip="2001:db8:1:2::1"))).decision is Decision.TEMPFAIL
    clock.now += 61
    assert (await flt.check(Phase.RCPT, rcpt(ip="2001:db8:1:2:ffff::9"))).decision is Decision.CONTINUE
    assert (await flt.check(Phase.RCPT, rcpt(ip="2001:db8:1:3::1"))).decision is Decision.TEMPFAIL


async def test_a_retry_after_the_window_starts_over() -> None:
    store_clock = FakeClock(1_700_000_000.0)
    store = MemoryStore(clock=store_clock)
    flt, clock = make(store, retry_window=3600)
    assert (await flt.check(Phase.RCPT, rcpt())).decision is Decision.TEMPFAIL
    clock.now += 4000
    store_clock.now += 4000  # the triplet expired in the store
    v = await flt.check(Phase.RCPT, rcpt())
    assert v.decision is Decision.TEMPFAIL and "60 seconds" in str(v.reply)


async def test_passed_triplets_expire() -> None:
    store_clock = FakeClock(1_700_000_000.0)
    flt, clock = make(MemoryStore(clock=store_clock), triplet_ttl=1000, auto_allowlist_after=0)
    await flt.check(Phase.RCPT, rcpt())
    clock.now += 61
    assert (await flt.check(Phase.RCPT, rcpt())).decision is Decision.CONTINUE
    store_clock.now += 1001
    assert (await flt.check(Phase.RCPT, rcpt())).decision is Decision.TEMPFAIL


async def test_auto_allowlist_after_n_passes() -> None:
    flt, clock = make(auto_allowlist_after=2)
    before = count("auto_allowlisted")
    for to in ("x1@example.edu", "x2@example.edu"):
        await flt.check(Phase.RCPT, rcpt(to=to))
    clock.now += 61
    for to in ("x1@example.edu", "x2@example.edu"):
        assert (await flt.check(Phase.RCPT, rcpt(to=to))).decision is Decision.CONTINUE
    assert count("auto_allowlisted") == before + 1
    # Any new triplet from that network now passes at once.
    assert (await flt.check(Phase.RCPT, rcpt(ip="192.0.2.200", to="new@example.edu"))).decision is Decision.CONTINUE
    assert (await flt.check(Phase.RCPT, rcpt(ip="198.51.100.1", to="new@example.edu"))).decision is Decision.TEMPFAIL


@pytest.mark.parametrize("ctx", [
    rcpt(user="alice"),
    rcpt(ip="10.1.2.3"),
    rcpt(sender="news@lists.partner.example"),
    rcpt(client_name="mail-qk1.bigprovider.example"),
])
async def test_skips(ctx: Any) -> None:
    flt, _ = make(allowlist_networks=["10.0.0.0/8"], allowlist_domains=["partner.example", "bigprovider.example"])
    assert (await flt.check(Phase.RCPT, ctx)).decision is Decision.CONTINUE


class BrokenStore(MemoryStore):
    async def get(self, key: str) -> str | None:
        raise StateError("redis get: ConnectionError: refused")


async def test_state_errors_follow_on_state_error(caplog: pytest.LogCaptureFixture) -> None:
    flt, _ = make(BrokenStore())
    errors = METRICS.value("spamgate_greylist_state_errors_total")
    for _ in range(3):
        v = await flt.check(Phase.RCPT, rcpt())
        assert v.decision is Decision.CONTINUE and v.symbols[0].name == "GREYLIST_STATE_ERROR"
    assert METRICS.value("spamgate_greylist_state_errors_total") == errors + 3
    assert sum("state=down" in r.getMessage() for r in caplog.records) == 1  # one line per outage
    strict, _ = make(BrokenStore(), on_state_error="tempfail")
    v = await strict.check(Phase.RCPT, rcpt())
    assert v.decision is Decision.TEMPFAIL and str(v.reply).startswith("451 4.3.0")


def test_options_are_validated() -> None:
    with pytest.raises(OptionError, match="retry_window"):
        GreylistFilter("greylist", {"delay": 600, "retry_window": 300}, FilterEnv())
    with pytest.raises(OptionError, match="delay"):
        GreylistFilter("greylist", {"delay": "5"}, FilterEnv())
    with pytest.raises(OptionError, match="nonsense"):
        GreylistFilter("greylist", {"nonsense": 1}, FilterEnv())


def test_dnswl_query_names() -> None:
    assert dnswl_query("192.0.2.10", "list.dnswl.org") == "10.2.0.192.list.dnswl.org"
    assert dnswl_query("::ffff:192.0.2.10", "wl.example.") == "10.2.0.192.wl.example"
    assert dnswl_query("2001:db8::1", "wl.example").endswith(".8.b.d.0.1.0.0.2.wl.example")
