"""local_sender: local addresses are for logged-in users only.

The spoof spamgate exists to stop is a stranger saying ``MAIL FROM:<secr@example.edu>``
(or just ``From: secr@example.edu``) to a server that then delivers it to colleagues.

* MAIL, unauthenticated, sender in a local domain: ``553 5.7.1 ... not logged in``;
* MAIL, authenticated, sender not owned by the login (sender-login map, default: the
  login's own address): ``553 5.7.1 ... not owned by user <login>``;
* DATA, unauthenticated, a ``From:`` header in a local domain: ``550 5.7.1`` or a score
  (mailing lists that keep the author's From: make ``score`` the gentler choice);
* DATA, authenticated, a ``From:`` address the login does not own (same rule as the
  envelope): ``550 5.7.1 ... not owned by user <login>`` or a score, so a logged-in
  account cannot impersonate a colleague in the header people read.

Unauthenticated MAIL on ``submission``/``smtps`` listeners is refused by the engine
itself (``530 5.7.0``), whatever filters run. Setting ``[auth] local_domains`` turns
this filter on unless its table says ``enabled = false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import getaddresses
from typing import Any, Literal

from spamgate.filters.local_sender.sender_login import SenderLoginMap, load_sender_login_map, may_send_as
from spamgate.filters.sdk.api import Context, FilterEnv, OptionError, Phase, Reply, Symbol, Verdict, domain_of
from spamgate.filters.sdk.options import FilterOptions, parse_options

__all__ = ["LocalSenderFilter", "LocalSenderOptions"]

SYM_UNAUTH = "LOCAL_SENDER_UNAUTH"
SYM_NOT_OWNED = "LOCAL_SENDER_NOT_OWNED"
SYM_FROM_UNAUTH = "LOCAL_FROM_UNAUTH"
SYM_FROM_NOT_OWNED = "LOCAL_FROM_NOT_OWNED"


class LocalSenderOptions(FilterOptions):
    sender_login_map: str | None = None
    null_sender_ok: bool = True
    authenticated_senders: Literal["map", "any"] = "map"
    from_header: Literal["reject", "score", "off"] = "reject"
    from_header_score: float = 10.0


class LocalSenderFilter:
    phases = frozenset({Phase.MAIL, Phase.DATA})
    symbols = frozenset({SYM_UNAUTH, SYM_NOT_OWNED, SYM_FROM_UNAUTH, SYM_FROM_NOT_OWNED})

    def __init__(self, name: str, options: Mapping[str, Any], env: FilterEnv) -> None:
        self.name = name
        self.opts = parse_options(LocalSenderOptions, options)
        self.env = env
        self.sender_map: SenderLoginMap | None = None
        path = self.opts.sender_login_map or env.sender_login_map
        if path:
            try:
                self.sender_map = load_sender_login_map(path)
            except OSError as exc:
                raise OptionError("sender_login_map", f"cannot read {path}: {exc}") from None
            except (ValueError, UnicodeDecodeError) as exc:
                raise OptionError("sender_login_map", str(exc)) from None

    async def check(self, phase: Phase, ctx: Context) -> Verdict:
        if phase is Phase.MAIL:
            return self._check_mail(ctx)
        if phase is Phase.DATA:
            return self._check_from_header(ctx)
        return Verdict.cont()

    def _check_mail(self, ctx: Context) -> Verdict:
        login = ctx.session.authenticated_user
        addr = (ctx.envelope.mail_from or "").strip().strip("<>")
        if login is None:
            if self.env.is_local_domain(domain_of(addr)):
                return Verdict.reject(
                    Reply(553, "5.7.1", f"<{addr}>: Sender address rejected: not logged in"),
                    Symbol(SYM_UNAUTH, 0.0, addr),
                )
            return Verdict.cont()
        if self.opts.authenticated_senders == "any":
            return Verdict.cont()
        if not addr:
            if self.opts.null_sender_ok:
                return Verdict.cont()
        elif may_send_as(login, addr, self.sender_map, local_domains=self.env.local_domains):
            return Verdict.cont()
        return Verdict.reject(
            Reply(553, "5.7.1", f"<{addr}>: Sender address rejected: not owned by user {login}"),
            Symbol(SYM_NOT_OWNED, 0.0, f"{addr} login={login}"),
        )

    def _check_from_header(self, ctx: Context) -> Verdict:
        if self.opts.from_header == "off" or ctx.message is None:
            return Verdict.cont()
        senders = [a for _, a in getaddresses(ctx.message.get_all("From")) if a]
        login = ctx.session.authenticated_user
        if login is None:
            local = [a for a in senders if self.env.is_local_domain(domain_of(a))]
            if not local:
                return Verdict.cont()
            return self._from_verdict(SYM_FROM_UNAUTH, local[0], "From: header in a local domain needs authentication")
        if self.opts.authenticated_senders == "any":
            return Verdict.cont()
        for addr in senders:
            if not may_send_as(login, addr, self.sender_map, local_domains=self.env.local_domains):
                return self._from_verdict(SYM_FROM_NOT_OWNED, addr, f"From: header address not owned by user {login}")
        return Verdict.cont()

    def _from_verdict(self, symbol: str, addr: str, why: str) -> Verdict:
        if self.opts.from_header == "score":
            return Verdict.cont(Symbol(symbol, self.opts.from_header_score, addr))
        return Verdict.reject(Reply(550, "5.7.1", f"<{addr}>: {why}"), Symbol(symbol, 0.0, addr))

    async def close(self) -> None:
        pass
