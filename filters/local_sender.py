"""local_sender: local addresses are for logged-in users only.

The spoof spamgate exists to stop is a stranger saying ``MAIL FROM:<secr@example.edu>``
(or just ``From: secr@example.edu``) to a server that then delivers it to colleagues.

* MAIL, unauthenticated, on a ``submission``/``smtps`` listener: ``530 5.7.0``;
* MAIL, unauthenticated, sender in a local domain: ``553 5.7.1 ... not logged in``;
* MAIL, authenticated, sender not owned by the login (sender-login map, default: the
  login's own address): ``553 5.7.1 ... not owned by user <login>``;
* DATA, unauthenticated, a ``From:`` header in a local domain: ``550 5.7.1`` or a score
  (mailing lists that keep the author's From: make ``score`` the gentler choice).
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import getaddresses
from typing import Any, Literal

from filters.api import Context, FilterEnv, OptionError, Phase, Reply, Symbol, Verdict, domain_of
from filters.options import FilterOptions, parse_options
from filters.sender_login import SenderLoginMap, load_sender_login_map, may_send_as

__all__ = ["LocalSenderFilter", "LocalSenderOptions"]

SYM_UNAUTH = "LOCAL_SENDER_UNAUTH"
SYM_AUTH_REQUIRED = "LOCAL_SENDER_AUTH_REQUIRED"
SYM_NOT_OWNED = "LOCAL_SENDER_NOT_OWNED"
SYM_FROM_UNAUTH = "LOCAL_FROM_UNAUTH"


class LocalSenderOptions(FilterOptions):
    sender_login_map: str | None = None
    null_sender_ok: bool = True
    authenticated_senders: Literal["map", "any"] = "map"
    require_auth_roles: tuple[str, ...] = ("submission", "smtps")
    from_header: Literal["reject", "score", "off"] = "reject"
    from_header_score: float = 10.0


class LocalSenderFilter:
    phases = frozenset({Phase.MAIL, Phase.DATA})
    symbols = frozenset({SYM_UNAUTH, SYM_AUTH_REQUIRED, SYM_NOT_OWNED, SYM_FROM_UNAUTH})

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
            if ctx.session.listener_role in self.opts.require_auth_roles:
                return Verdict.reject(
                    Reply(530, "5.7.0", "Authentication required"),
                    Symbol(SYM_AUTH_REQUIRED, 0.0, f"role {ctx.session.listener_role}"),
                )
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
        if self.opts.from_header == "off" or ctx.session.authenticated_user is not None or ctx.message is None:
            return Verdict.cont()
        local = [a for _, a in getaddresses(ctx.message.get_all("From")) if self.env.is_local_domain(domain_of(a))]
        if not local:
            return Verdict.cont()
        addr = local[0]
        if self.opts.from_header == "score":
            return Verdict.cont(Symbol(SYM_FROM_UNAUTH, self.opts.from_header_score, addr))
        return Verdict.reject(
            Reply(550, "5.7.1", f"<{addr}>: From: header in a local domain needs authentication"),
            Symbol(SYM_FROM_UNAUTH, 0.0, addr),
        )

    async def close(self) -> None:
        pass
