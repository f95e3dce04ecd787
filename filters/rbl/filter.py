"""The ``rbl`` filter: weighted DNS block- and allowlists (DNSBL, DNSWL, RHSBL, URIBL).

When each check runs and what it returns:

* connect: the client IP (and, for ``check = ["reverse_name"]`` domain lists, its
  reverse name) against every list at once, so the cost is one round trip;
* helo / mail: the HELO name and the MAIL FROM domain against domain lists;
* rcpt: only when ``reject_score`` is set: the weights of the client's listings
  (IP, HELO, sender) are summed and, at or above ``reject_score``, the recipient is
  refused with Postfix's wording. The outcomes come from a small per-session memo
  (bounded, oldest sessions evicted), because per-transaction notes don't survive
  from the connect phase; so RCPT decides on exactly what was scored, and a list
  that timed out at connect does not make every RCPT wait again;
* data: the domains of URLs in the body against URI lists (at most ``max_uris``).

Every listing is a symbol whose score is the list's weight (negative for DNSWL),
so the weights feed the message score whether or not ``reject_score`` is set.
Error answers and timeouts are zero-weight ``<SYMBOL>_ERROR`` / ``_TIMEOUT`` symbols.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spamgate.filters.rbl.lists import Classified, ListOptions, RblOptions, classify, reverse_ip
from spamgate.filters.rbl.uris import message_url_hosts
from spamgate.filters.sdk.api import Context, FilterEnv, Phase, Reply, Symbol, Verdict
from spamgate.filters.sdk.dns import Resolver
from spamgate.filters.sdk.metrics import MetricSpec
from spamgate.filters.sdk.options import parse_options
from spamgate.filters.services.dns import CachingResolver

__all__ = ["LOOKUPS", "Listing", "RblFilter"]

log = logging.getLogger("spamgate.filters.rbl")

LOOKUPS = MetricSpec(
    "counter", "spamgate_dnsbl_lookups_total", "DNS list lookups by list and result", ("list", "result")
)

# Sessions whose lookups are remembered for their RCPT decisions; the oldest go first
# (the engine tells filters nothing when a session ends).
MEMO_SESSIONS = 4096

# (list, role, item looked up, query name)
Item = tuple[ListOptions, str, str, str]

# Postfix's rbl_class for each thing we look up (smtpd_check.c).
_CLASS = {"ip": "Client host", "helo": "Helo command", "mail_from": "Sender address", "reverse_name": "Client host"}


@dataclass(frozen=True)
class Listing:
    """One list's verdict on one looked-up item (an IP, a HELO name, a domain)."""

    lst: ListOptions
    role: str
    item: str
    query: str
    outcome: Classified

    def symbols(self) -> list[Symbol]:
        base = self.lst.main_symbol
        o = self.outcome
        if o.result == "error":
            return [Symbol(f"{base}_ERROR", 0.0, f"{self.item}: {o.detail}")]
        if o.result == "timeout":
            return [Symbol(f"{base}_TIMEOUT", 0.0, f"{self.item}: {o.detail}")]
        if o.result != "listed":
            return []
        addrs = [ipaddress.IPv4Address(c) for c in o.codes]
        names = [name for spec, name in self.lst.code_specs if any(spec.matches(a) for a in addrs)]
        names = list(dict.fromkeys(names)) or [base]
        detail = f"{self.item} {'/'.join(o.codes)}"
        # The list's weight counts once, however many of its codes matched.
        return [Symbol(name, self.lst.weight if i == 0 else 0.0, detail) for i, name in enumerate(names)]


class RblFilter:
    """See the module docstring; options are documented in docs/rbl.md."""

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.options = opts = parse_options(RblOptions, options)
        self.env = env
        self._lookups = LOOKUPS.counter(env.metrics)
        # The engine's shared resolver; without an engine (a bare FilterEnv) a private one.
        shared = env.resolver if env.resolver is not None else CachingResolver(env.dns, env.metrics)
        self._resolvers = {lst.label: self._resolver_for(lst, shared) for lst in opts.lists}
        by_kind = {k: tuple(lst for lst in opts.lists if lst.kind == k) for k in ("ip", "domain", "uri")}
        self.ip_lists, self.domain_lists, self.uri_lists = by_kind["ip"], by_kind["domain"], by_kind["uri"]
        checks = {c for lst in self.domain_lists for c in lst.check}
        phases = set()
        if self.ip_lists or "reverse_name" in checks:
            phases.add(Phase.CONNECT)
        if "helo" in checks:
            phases.add(Phase.HELO)
        if "mail_from" in checks:
            phases.add(Phase.MAIL)
        if opts.reject_score is not None and (self.ip_lists or self.domain_lists):
            phases.add(Phase.RCPT)
        if self.uri_lists and opts.max_uris > 0:
            phases.add(Phase.DATA)
        self.phases = frozenset(phases)
        self.symbols = frozenset(s for lst in opts.lists for s in lst.all_symbols)
        # session id -> (list, query) -> outcome: what connect/HELO/MAIL saw, for RCPT.
        self._memo: OrderedDict[str, dict[tuple[str, str], Listing]] = OrderedDict()

    @staticmethod
    def _resolver_for(lst: ListOptions, shared: Resolver) -> Resolver:
        if lst.nameservers is None and lst.port is None:
            return shared
        settings = shared.settings
        return shared.for_servers(
            lst.nameservers if lst.nameservers is not None else settings.nameservers,
            lst.port if lst.port is not None else settings.port,
        )

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        if phase is Phase.CONNECT:
            found = await self._client_listings(ctx, ("ip", "reverse_name"))
        elif phase is Phase.HELO:
            found = await self._client_listings(ctx, ("helo",))
        elif phase is Phase.MAIL:
            found = await self._client_listings(ctx, ("mail_from",))
        elif phase is Phase.RCPT:
            return await self._rcpt_verdict(ctx)
        elif phase is Phase.DATA:
            found = await self._uri_listings(ctx)
        else:
            return Verdict.cont()
        self._report(ctx, found)
        return Verdict.cont(*_merge(s for listing in found for s in listing.symbols()))

    async def ready(self) -> bool:
        """/readyz: every list's resolver answers (NXDOMAIN counts: the server is there)."""
        probes = [r.query(f"2.0.0.127.{zone}", "A", max_wait=2.0)
                  for zone, r in {lst.zone: self._resolvers[lst.label] for lst in self.options.lists}.items()]
        answers = await asyncio.gather(*probes)
        return all(a.status in ("ok", "nxdomain", "nodata") for a in answers)

    async def close(self) -> None:
        pass

    # -- what to look up -------------------------------------------------------------

    def _client_ip_checked(self, ctx: Context) -> bool:
        addr = ctx.session.peer_address
        if addr is None:
            return False
        if self.options.skip_private and not addr.is_global:
            return False
        return not any(addr in net for net in self.options.allow_networks)

    def _domain_allowed(self, domain: str) -> bool:
        # Our own domains are in every signature and reply; asking lists about them is waste.
        if self.env.is_local_domain(domain):
            return True
        return any(domain == d or domain.endswith("." + d) for d in self.options.allow_domains)

    def _client_items(self, ctx: Context, roles: Iterable[str]) -> list[Item]:
        """(list, role, item, query name) for each lookup about the client."""
        out = []
        roles = set(roles)
        if "ip" in roles and self._client_ip_checked(ctx):
            ip = ctx.session.peer_ip
            rev = reverse_ip(ip)
            is_v6 = ":" in ip and not ip.lower().startswith("::ffff:")
            for lst in self.ip_lists:
                if rev and (lst.ipv6 or not is_v6):
                    out.append((lst, "ip", ip, f"{rev}.{lst.zone}"))
        names = {
            "helo": ctx.session.helo,
            "mail_from": ctx.envelope.mail_from_domain,
            "reverse_name": ctx.session.reverse_name,
        }
        for role in ("helo", "mail_from", "reverse_name"):
            domain = _clean_domain(names[role]) if role in roles else None
            if domain is None or self._domain_allowed(domain):
                continue
            out.extend((lst, role, domain, f"{domain}.{lst.zone}") for lst in self.domain_lists if role in lst.check)
        return out

    async def _client_listings(self, ctx: Context, roles: Sequence[str]) -> list[Listing]:
        """Look up the client's items, remembering the outcomes for this session's RCPTs."""
        items = self._client_items(ctx, roles)
        memo = self._memo.get(ctx.session.session_id, {})
        todo = [it for it in items if (it[0].label, it[3]) not in memo]
        for listing in await self._lookup_all(todo):
            memo[(listing.lst.label, listing.query)] = listing
        self._memo[ctx.session.session_id] = memo
        self._memo.move_to_end(ctx.session.session_id)
        while len(self._memo) > MEMO_SESSIONS:
            self._memo.popitem(last=False)
        return [memo[(it[0].label, it[3])] for it in items]

    async def _uri_listings(self, ctx: Context) -> list[Listing]:
        if ctx.message is None:
            return []
        hosts = await asyncio.to_thread(message_url_hosts, ctx.message.raw, self.options.max_uris)
        items: list[Item] = []
        for host in hosts:
            rev = reverse_ip(host)
            if rev is None and self._domain_allowed(host):
                continue
            items.extend((lst, "uri", host, f"{rev or host}.{lst.zone}") for lst in self.uri_lists)
        return await self._lookup_all(items)

    async def _lookup_all(self, items: Sequence[Item]) -> list[Listing]:
        answers = await asyncio.gather(
            *(self._resolvers[lst.label].query(q, "A", max_wait=lst.timeout) for lst, _, _, q in items)
        )
        found = []
        for (lst, role, item, q), answer in zip(items, answers, strict=True):
            outcome = classify(answer, lst)
            self._lookups.labels(lst.label, outcome.result).inc()
            found.append(Listing(lst, role, item, q, outcome))
        return found

    # -- the RCPT decision -----------------------------------------------------------

    async def _rcpt_verdict(self, ctx: Context) -> Verdict:
        threshold = self.options.reject_score
        if threshold is None or not self._refusable(ctx) or self._exempt(ctx.envelope.rcpt):
            return Verdict.cont()
        found = await self._client_listings(ctx, ("ip", "helo", "mail_from", "reverse_name"))
        listed = [x for x in found if x.outcome.result == "listed"]
        total = sum(x.lst.weight for x in listed)
        if total < threshold or not listed:
            return Verdict.cont()
        worst = max(listed, key=lambda x: x.lst.weight)
        reply = Reply(554, "5.7.1", await self._reply_text(worst))
        log.info(
            "filter=%s reject weight=%.2f threshold=%.2f by=%s item=%s",
            self.name, total, threshold, worst.lst.label, worst.item,
        )
        return Verdict.reject(reply)

    def _refusable(self, ctx: Context) -> bool:
        # A client on allow_networks is never refused, whatever its names say.
        addr = ctx.session.peer_address
        return not (addr is not None and any(addr in net for net in self.options.allow_networks))

    def _exempt(self, rcpt: str | None) -> bool:
        # RFC 5321 4.5.1: postmaster must be reachable, even by a listed client.
        if not rcpt:
            return False
        r = rcpt.strip("<>").lower()
        local = r.rsplit("@", 1)[0]
        return any(e.lower() in (local, r) for e in self.options.exempt_recipients)

    async def _reply_text(self, listing: Listing) -> str:
        """Postfix's default_rbl_reply: ``Service unavailable; <class> [<what>] blocked using <zone>; <TXT>``."""
        text = f"Service unavailable; {_CLASS[listing.role]} [{listing.item}] blocked using {listing.lst.zone}"
        txt = await self._resolvers[listing.lst.label].query(listing.query, "TXT", max_wait=listing.lst.timeout)
        reason = _printable(txt.records[0]) if txt.found else ""
        return f"{text}; {reason}" if reason else text

    def _report(self, ctx: Context, found: Sequence[Listing]) -> None:
        for x in found:
            o = x.outcome
            if o.result == "listed":
                log.info(
                    "filter=%s list=%s %s=%s listed codes=%s weight=%.2f",
                    self.name, x.lst.label, x.role, x.item, ",".join(o.codes), x.lst.weight,
                )
            elif o.result in ("error", "timeout"):
                log.warning(
                    "filter=%s list=%s %s=%s %s: %s", self.name, x.lst.label, x.role, x.item, o.result, o.detail,
                )


def _clean_domain(name: str | None) -> str | None:
    """A lookup-safe domain, or None for address literals, bare words and junk."""
    if not name:
        return None
    d = name.strip().rstrip(".").lower()
    if "." not in d or len(d) > 253 or not d.isascii() or d.replace(".", "").isdigit():
        return None
    if not all(0 < len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum() for label in d.split(".")):
        return None
    return d


def _merge(symbols: Iterable[Symbol]) -> list[Symbol]:
    """One symbol per name: ten listed URLs on one list count that list's weight once."""
    merged: dict[str, Symbol] = {}
    for sym in symbols:
        prev = merged.get(sym.name)
        if prev is None:
            merged[sym.name] = sym
        else:
            detail = prev.detail if len(prev.detail) > 200 else f"{prev.detail}, {sym.detail}"
            merged[sym.name] = Symbol(sym.name, max(prev.score, sym.score), detail)
    return list(merged.values())


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c if c.isprintable() else " " for c in text).strip()[:limit]
