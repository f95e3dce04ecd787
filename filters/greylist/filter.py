"""greylist: make unknown senders come back later; real MTAs retry, most spam engines don't.

At RCPT the triplet (client network, sender, recipient) is looked up in the state store:

* first sight: ``451 4.7.1 Greylisted, please try again in N seconds`` (N counts down);
* a retry after ``delay`` and within ``retry_window`` passes; the triplet is then remembered
  as passed for ``triplet_ttl`` (refreshed on every pass), so the next mail is not delayed;
* a client network that passed ``auto_allowlist_after`` triplets is allowlisted as a whole
  for ``auto_allowlist_ttl`` (0 turns this off).

Never greylisted: authenticated users; clients in ``allowlist_networks``; senders (or a
confirmed client host name) in ``allowlist_domains``; with ``spf = true``, clients that pass
SPF for their MAIL FROM domain; clients listed on one of ``dnswl_zones``. Those last two are
what keep big providers, which retry from rotating address pools, from being delayed.
SPF is checked by this filter itself (pyspf through the shared resolver, only for triplets
seen for the first time): sender_auth checks SPF at DATA, after the RCPT decision.

State lives in ``FilterEnv.state`` (memory or Redis: the whole cluster shares it). When the
store fails, ``on_state_error`` says what happens: ``continue`` (default; mail flows
ungreylisted, the outage is logged once and counted) or ``tempfail`` (``451 4.3.0``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from spamgate.filters.sdk.api import Context, FilterEnv, Phase, Reply, Symbol, Verdict
from spamgate.filters.sdk.dns import Resolver
from spamgate.filters.sdk.metrics import Counter, MetricSpec
from spamgate.filters.sdk.options import FilterOptions, Networks, client_address, parse_options
from spamgate.filters.sdk.outage import Outage
from spamgate.filters.sdk.state import StateError
from spamgate.filters.services.auth_dns import AuthDns
from spamgate.filters.services.dns import shared_resolver
from spamgate.filters.services.spf import check_spf
from spamgate.filters.services.state_keys import client_network, digest, env_store

__all__ = ["GreylistFilter", "GreylistOptions"]

log = logging.getLogger("spamgate.filters.greylist")

SYM_GREYLISTED = "GREYLISTED"
SYM_PASSED = "GREYLIST_PASSED"
SYM_STATE_ERROR = "GREYLIST_STATE_ERROR"
_PASSED = "pass"
_DAY = 86400.0


class GreylistOptions(FilterOptions):
    delay: float = Field(default=300.0, ge=0)
    retry_window: float = Field(default=2 * _DAY, gt=0)
    triplet_ttl: float = Field(default=35 * _DAY, gt=0)
    auto_allowlist_after: int = Field(default=5, ge=0)
    auto_allowlist_ttl: float = Field(default=35 * _DAY, gt=0)
    allowlist_networks: Networks = ()
    allowlist_domains: tuple[str, ...] = ()
    spf: bool = True
    dnswl_zones: tuple[str, ...] = ()
    ipv4_prefix: int = Field(default=24, ge=8, le=32)
    ipv6_prefix: int = Field(default=64, ge=16, le=128)
    on_state_error: Literal["continue", "tempfail"] = "continue"

    @model_validator(mode="after")
    def _window(self) -> GreylistOptions:
        if self.retry_window <= self.delay:
            raise ValueError("retry_window must be longer than delay")
        return self


@dataclass(frozen=True)
class _Metrics:
    results: Counter
    skipped: Counter
    state_errors: Counter


RESULTS = MetricSpec(
    "counter", "spamgate_greylist_results_total",
    "Greylisting outcomes at RCPT (greylisted, passed, allowlisted, auto_allowlisted)", ("result",),
)
SKIPPED = MetricSpec(
    "counter", "spamgate_greylist_skipped_total",
    "Recipients not greylisted, by reason (authenticated, network, domain, spf, dnswl)", ("reason",),
)
STATE_ERRORS = MetricSpec(
    "counter", "spamgate_greylist_state_errors_total",
    "Greylist lookups that the state store could not answer", (),
)


def _in_domains(name: str | None, domains: tuple[str, ...]) -> bool:
    if not name:
        return False
    name = name.lower().rstrip(".")
    return any(name == d or name.endswith("." + d) for d in domains)


def dnswl_query(ip: str, zone: str) -> str | None:
    addr = client_address(ip)
    if addr is None:
        return None
    suffix = ".in-addr.arpa" if addr.version == 4 else ".ip6.arpa"
    return f"{addr.reverse_pointer.removesuffix(suffix)}.{zone.strip('.')}"


def _dnswl_listed(records: tuple[str, ...]) -> bool:
    # dnswl.org answers 127.0.0.255 when it refuses the querier; 127.255.255.x are error codes.
    return any(r.startswith("127.") and r != "127.0.0.255" and not r.startswith("127.255.255.") for r in records)


class GreylistFilter:
    phases = frozenset({Phase.RCPT})
    symbols = frozenset({SYM_GREYLISTED, SYM_PASSED, SYM_STATE_ERROR})

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.opts = parse_options(GreylistOptions, options)
        self.domains = tuple(d.lower().strip(".") for d in self.opts.allowlist_domains)
        self.env = env
        self.store = env_store(env)
        self.clock: Callable[[], float] = time.time  # wall clock: instances compare each other's stamps
        self.outage = Outage(f"state:{name}", log)
        self._auth_dns: AuthDns | None = None
        self.m = _Metrics(RESULTS.counter(env.metrics), SKIPPED.counter(env.metrics), STATE_ERRORS.counter(env.metrics))

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        skip = self._static_skip(ctx)
        if skip is not None:
            self.m.skipped.labels(skip).inc()
            return Verdict.cont()
        net = client_network(ctx.session.peer_ip, self.opts.ipv4_prefix, self.opts.ipv6_prefix)
        if net is None:
            return Verdict.cont()
        try:
            verdict = await self._triplet(ctx, net)
        except StateError as exc:
            self.outage.failed(str(exc))
            self.m.state_errors.inc()
            if self.opts.on_state_error == "tempfail":
                return Verdict.tempfail(Reply(451, "4.3.0", "Greylisting unavailable, please try again later"),
                                        Symbol(SYM_STATE_ERROR, 0.0, str(exc)))
            return Verdict.cont(Symbol(SYM_STATE_ERROR, 0.0, str(exc)))
        self.outage.ok()
        return verdict

    def _static_skip(self, ctx: Context) -> str | None:
        if ctx.session.authenticated_user is not None:
            return "authenticated"
        addr = ctx.session.peer_address
        if addr is not None and any(addr in n for n in self.opts.allowlist_networks):
            return "network"
        if _in_domains(ctx.envelope.mail_from_domain, self.domains) or _in_domains(ctx.session.client_name,
                                                                                    self.domains):
            return "domain"
        return None

    async def _triplet(self, ctx: Context, net: str) -> Verdict:
        if await self.store.get(f"gl:auto:{net}") is not None:
            self.m.results.labels("allowlisted").inc()
            return Verdict.cont()
        sender = (ctx.envelope.mail_from or "").lower()
        rcpt = (ctx.envelope.rcpt or "").lower()
        key = f"gl:t:{digest(net, sender, rcpt)}"
        now = self.clock()
        seen = await self.store.get(key)
        if seen is None:
            skip = await self._dynamic_skip(ctx)
            if skip is not None:
                self.m.skipped.labels(skip).inc()
                return Verdict.cont()
            if await self.store.set_if_absent(key, f"{now:.3f}", self.opts.retry_window):
                return self._greylisted(self.opts.delay, net)
            seen = await self.store.get(key)  # another instance recorded it a moment ago
            if seen is None:
                return self._greylisted(self.opts.delay, net)
        if seen == _PASSED:
            await self.store.set(key, _PASSED, self.opts.triplet_ttl)
            self.m.results.labels("passed").inc()
            return Verdict.cont(Symbol(SYM_PASSED, 0.0, "known triplet"))
        waited = now - float(seen)
        if waited < self.opts.delay:
            return self._greylisted(self.opts.delay - waited, net)
        await self.store.set(key, _PASSED, self.opts.triplet_ttl)
        self.m.results.labels("passed").inc()
        await self._count_pass(net)
        return Verdict.cont(Symbol(SYM_PASSED, 0.0, f"retried after {waited:.0f}s"))

    async def _count_pass(self, net: str) -> None:
        after = self.opts.auto_allowlist_after
        if after <= 0:
            return
        passes = await self.store.incr(f"gl:passes:{net}", self.opts.auto_allowlist_ttl)
        if passes == after:
            await self.store.set(f"gl:auto:{net}", "1", self.opts.auto_allowlist_ttl)
            self.m.results.labels("auto_allowlisted").inc()
            log.info("greylist auto-allowlisted network=%s passes=%d", net, passes)

    def _greylisted(self, remaining: float, net: str) -> Verdict:
        self.m.results.labels("greylisted").inc()
        seconds = max(1, math.ceil(remaining))
        return Verdict.tempfail(Reply(451, "4.7.1", f"Greylisted, please try again in {seconds} seconds"),
                                Symbol(SYM_GREYLISTED, 0.0, f"network={net}"))

    def _resolver(self) -> Resolver:
        """The engine's shared resolver; a filter built outside the engine (tests) makes its own."""
        return self.env.resolver if self.env.resolver is not None else shared_resolver(self.env.dns)

    async def _dynamic_skip(self, ctx: Context) -> str | None:
        """The checks that cost DNS lookups, made only for a triplet never seen before."""
        ip = ctx.session.peer_ip
        if self.opts.spf and ctx.envelope.mail_from_domain:
            if self._auth_dns is None:
                self._auth_dns = AuthDns(self._resolver())
            result = await check_spf(self._auth_dns, ip, ctx.envelope.mail_from, ctx.session.helo, "mailfrom")
            if result.result == "pass":
                return "spf"
        if self.opts.dnswl_zones:
            resolver = self._resolver()
            for zone in self.opts.dnswl_zones:
                qname = dnswl_query(ip, zone)
                if qname is not None and _dnswl_listed((await resolver.query(qname, "A")).records):
                    return "dnswl"
        return None

    async def close(self) -> None:
        pass
