"""sender_auth: SPF, DKIM, DMARC (and ARC) for inbound mail; DKIM signing for logged-in users.

At end of DATA, for an unauthenticated session: SPF for MAIL FROM and HELO and every
DKIM/ARC signature are checked concurrently, then DMARC for the From domain; the
results become symbols and one ``Authentication-Results`` header with our authserv-id,
after any inbound header claiming that authserv-id has been removed (RFC 8601
section 5: a forged "pass" from us must not survive). A DMARC ``p=reject`` failure is
rejected with ``550 5.7.1`` when ``dmarc_enforce`` is on, otherwise it scores.

For an authenticated session: no checks (the mail is ours); the header records the
login (``auth=pass``) and, if the From domain is in ``signing_domains``, the message is
signed with that domain's selector and key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from email.utils import getaddresses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spamgate.filters.sdk.api import Context, FilterEnv, HeaderRemoval, OptionError, Phase, Reply, Symbol, Verdict
from spamgate.filters.sdk.metrics import MetricSpec
from spamgate.filters.sdk.options import FilterOptions, parse_options
from spamgate.filters.sender_auth.auth_results import (
    DEFAULT_SCORES,
    AuthOutcome,
    auth_results_value,
    outcome_symbols,
    submission_results_value,
)
from spamgate.filters.sender_auth.dkim_check import DkimVerification, verify_dkim
from spamgate.filters.sender_auth.dkim_sign import DEFAULT_SIGN_HEADERS, SigningKey, load_signing_key, sign_message
from spamgate.filters.sender_auth.dmarc import check_dmarc
from spamgate.filters.services.auth_dns import AuthDns
from spamgate.filters.services.dns import CachingResolver
from spamgate.filters.services.public_suffix import DEFAULT_PSL_PATH, load_psl
from spamgate.filters.services.spf import SpfResult, check_spf

__all__ = ["SenderAuthFilter", "SenderAuthOptions", "SigningDomain"]

log = logging.getLogger("spamgate.filters.sender_auth")

RESULTS = MetricSpec(
    "counter",
    "spamgate_sender_auth_results_total",
    "Sender authentication results by method (spf, spf_helo, dkim, dmarc, arc) and RFC 8601 result",
    ("method", "result"),
)
SIGNED = MetricSpec("counter", "spamgate_dkim_signed_total", "Messages DKIM-signed for authenticated users",
                    ("algorithm",))


class SigningDomain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    selector: str = Field(min_length=1)
    key_file: str = Field(min_length=1)


class SenderAuthOptions(FilterOptions):
    authserv_id: str | None = None
    spf: bool = True
    spf_helo: bool = True
    dkim: bool = True
    dmarc: bool = True
    dmarc_enforce: bool = False
    dkim_min_key_bits: int = Field(default=1024, ge=512)
    scores: dict[str, float] = Field(default_factory=dict)
    signing_domains: dict[str, SigningDomain] = Field(default_factory=dict)
    sign_headers: tuple[str, ...] = DEFAULT_SIGN_HEADERS
    public_suffix_list: str = DEFAULT_PSL_PATH

    @field_validator("scores")
    @classmethod
    def _scores(cls, v: dict[str, float]) -> dict[str, float]:
        for sym in v:
            if sym not in DEFAULT_SCORES:
                raise ValueError(f"unknown symbol {sym!r}")
        return v

    @field_validator("sign_headers")
    @classmethod
    def _sign_headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        lowered = tuple(h.strip().lower() for h in v)
        if "from" not in lowered:
            raise ValueError("must include 'from' (RFC 6376 section 5.4)")
        return lowered

    @field_validator("authserv_id")
    @classmethod
    def _authserv(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c in v for c in " ;()\"\r\n\t")):
            raise ValueError("must be a single token such as a host name")
        return v


def _load_keys(domains: Mapping[str, SigningDomain]) -> dict[str, SigningKey]:
    keys = {}
    for domain, cfg in domains.items():
        key = f"signing_domains.{domain}.key_file"
        try:
            keys[domain.lower().rstrip(".")] = load_signing_key(domain, cfg.selector, cfg.key_file)
        except OSError as exc:
            raise OptionError(key, f"cannot read {cfg.key_file}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise OptionError(key, str(exc)) from None
    return keys


class SenderAuthFilter:
    phases = frozenset({Phase.DATA})
    symbols = frozenset(DEFAULT_SCORES)

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.opts = parse_options(SenderAuthOptions, options)
        self.env = env
        self.authserv_id = self.opts.authserv_id or env.hostname
        self.scores = {**DEFAULT_SCORES, **self.opts.scores}
        self.keys = _load_keys(self.opts.signing_domains)
        self.psl = load_psl(self.opts.public_suffix_list)
        self._resolver: AuthDns | None = None
        self._results = RESULTS.counter(env.metrics)
        self._signed = SIGNED.counter(env.metrics)

    @property
    def resolver(self) -> AuthDns:
        # Built on first use: the asyncio resolver belongs to the running loop's world.
        if self._resolver is None:
            shared = self.env.resolver if self.env.resolver is not None else CachingResolver(self.env.dns)
            self._resolver = AuthDns(shared)
        return self._resolver

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        if phase is not Phase.DATA or ctx.message is None:
            return Verdict.cont()
        removal = (HeaderRemoval("Authentication-Results", self.authserv_id),)
        user = ctx.session.authenticated_user
        if user is not None:
            return await self._outbound(ctx, user, removal)
        outcome = await self._verify(ctx)
        symbols = [Symbol(name, self.scores[name], detail) for name, detail in outcome_symbols(outcome)]
        self._count(outcome)
        header = ("Authentication-Results", auth_results_value(self.authserv_id, outcome, ctx.envelope.mail_from))
        d = outcome.dmarc
        if self.opts.dmarc_enforce and d is not None and d.result == "fail" and d.policy == "reject":
            reply = Reply(550, "5.7.1", f"Message rejected: DMARC policy of {d.from_domain} says reject")
            return Verdict.reject(reply, *symbols)
        return Verdict.cont(*symbols, add_headers=[header], remove_headers=removal)

    async def _verify(self, ctx: Context) -> AuthOutcome:
        assert ctx.message is not None
        ip, helo, sender = ctx.session.peer_ip, ctx.session.helo, ctx.envelope.mail_from
        spf_task = helo_task = dkim_task = None
        async with asyncio.TaskGroup() as tg:
            if self.opts.spf:
                spf_task = tg.create_task(check_spf(self.resolver, ip, sender, helo, "mailfrom"))
            if self.opts.spf_helo and helo:
                helo_task = tg.create_task(check_spf(self.resolver, ip, None, helo, "helo"))
            if self.opts.dkim or self.opts.dmarc:
                dkim_task = tg.create_task(verify_dkim(self.resolver, ctx.message.raw, self.opts.dkim_min_key_bits))
        spf: SpfResult | None = spf_task.result() if spf_task else None
        dkim: DkimVerification | None = dkim_task.result() if dkim_task else None
        dmarc = None
        if self.opts.dmarc:
            passing = dkim.passing_domains() if dkim else []
            dmarc = await check_dmarc(self.resolver, ctx.message.get_all("From"), spf, passing, self.psl)
        return AuthOutcome(
            spf=spf,
            spf_helo=helo_task.result() if helo_task else None,
            dkim=dkim if self.opts.dkim else None,
            dmarc=dmarc,
        )

    async def _outbound(self, ctx: Context, user: str, removal: tuple[HeaderRemoval, ...]) -> Verdict:
        assert ctx.message is not None
        headers = [("Authentication-Results", submission_results_value(self.authserv_id, user))]
        symbols: list[Symbol] = []
        key = self._signing_key(ctx.message.get_all("From"))
        if key is not None:
            value = await asyncio.to_thread(sign_message, ctx.message.raw, key, self.opts.sign_headers)
            headers.insert(0, ("DKIM-Signature", value))
            symbols.append(Symbol("DKIM_SIGNED", self.scores["DKIM_SIGNED"], f"d={key.domain} s={key.selector}"))
            self._signed.labels(key.algorithm_name).inc()
        return Verdict.cont(*symbols, add_headers=headers, remove_headers=removal)

    def _signing_key(self, from_values: list[str]) -> SigningKey | None:
        domains = {a.rsplit("@", 1)[1].lower().rstrip(".") for _, a in getaddresses(from_values) if "@" in a}
        if len(domains) != 1:
            return None
        return self.keys.get(domains.pop())

    def _count(self, o: AuthOutcome) -> None:
        if o.spf is not None:
            self._results.labels("spf", o.spf.result).inc()
        if o.spf_helo is not None:
            self._results.labels("spf_helo", o.spf_helo.result).inc()
        if o.dkim is not None:
            for sig in o.dkim.signatures:
                self._results.labels("dkim", sig.result).inc()
            if not o.dkim.signatures:
                self._results.labels("dkim", "none").inc()
            self._results.labels("arc", o.dkim.arc).inc()
        if o.dmarc is not None:
            self._results.labels("dmarc", o.dmarc.result).inc()

    async def close(self) -> None:
        pass
