"""SMTP AUTH PLAIN and LOGIN for GateSMTP, checked asynchronously against our authenticators.

aiosmtpd's own authenticator hook is synchronous, which would stall every session while a
slow back-end (argon2, Dovecot) answers; these mechanisms await instead. The password is
never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from spamgate.filters.sdk.api import AuthAttempt, Context, Phase
from spamgate.proxy import metrics
from spamgate.proxy.runtime import Runtime
from spamgate.proxy.session import SessionState

__all__ = ["AuthMixin"]

log = logging.getLogger("spamgate.smtp")


class AuthMixin:
    """Mixed into GateSMTP (before aiosmtpd's SMTP), whose attributes it uses."""

    state: SessionState
    runtime: Runtime
    transport: asyncio.BaseTransport | None

    if TYPE_CHECKING:  # provided by GateSMTP / aiosmtpd's SMTP; defining them here would shadow those

        async def push(self, status: Any) -> None: ...

        async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                                 log_client_response: bool = False) -> Any: ...

    async def _login(self, mechanism: str, login: bytes, password: bytes) -> AuthResult:
        st, rt = self.state, self.runtime
        try:
            user = login.decode("utf-8")
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            await self.push("501 5.5.4 Invalid UTF-8 in credentials")
            return AuthResult(success=False, handled=True)
        if rt.authenticator is None:
            return AuthResult(success=False, handled=False)
        try:
            ok = await rt.authenticator.authenticate(user, secret, client_ip=st.peer_ip)
        except Exception as exc:
            rt.auth_outage.failed(f"{type(exc).__name__}: {exc}", exc)
            log.debug("auth backend error=%r", exc)
            await self.push("454 4.7.0 Temporary authentication failure")
            metrics.AUTH_ATTEMPTS.labels(mechanism, "error").inc()
            return AuthResult(success=False, handled=True)
        rt.auth_outage.ok()
        attempt = AuthAttempt(mechanism, user, ok)
        ctx = st.context(Phase.AUTH)
        ctx = Context(Phase.AUTH, ctx.session, ctx.envelope, None, attempt, {})
        result = await rt.pipeline.run(Phase.AUTH, ctx, st.board)
        if ok and result.reply is not None:
            await self.push(str(result.reply))
            metrics.AUTH_ATTEMPTS.labels(mechanism, "refused").inc()
            return AuthResult(success=False, handled=True)
        metrics.AUTH_ATTEMPTS.labels(mechanism, "success" if ok else "failure").inc()
        log.info("auth mechanism=%s user=%r result=%s", mechanism, user,
                 "success" if ok else "failure")
        if ok:
            st.login = user
            if rt.penalties is not None:
                await rt.penalties.record_success(st.peer_ip)
            return AuthResult(success=True, auth_data=LoginPassword(login, b""))
        if rt.penalties is not None and await rt.penalties.record_failure(st.peer_ip):
            metrics.PENALTY_BOX.inc()
            log.warning("client=%s penalty-box=entered", st.peer_ip)
            await self.push("421 4.7.0 Too many failed login attempts, closing connection")
            if self.transport is not None:
                self.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)

    async def _auth_allowed(self) -> bool:
        pen = self.runtime.penalties
        if pen is not None and await pen.is_blocked(self.state.peer_ip):
            await self.push("454 4.7.0 Too many failed login attempts, try again later")
            return False
        if self.runtime.authenticator is None:
            await self.push("504 5.5.4 Authentication not available")
            return False
        return True

    async def _b64(self, value: str) -> bytes | None:
        try:
            return base64.b64decode(value.encode(), validate=True)
        except (binascii.Error, ValueError):
            await self.push("501 5.5.2 Cannot decode base64")
            return None

    # aiosmtpd calls a handler's mechanism as auth_<MECH>(server, args): the handler is the
    # GateSMTP class, so server is self.
    async def auth_PLAIN(self, args: list[str]) -> AuthResult:
        if not await self._auth_allowed():
            return AuthResult(success=False, handled=True)
        blob = await self.challenge_auth("") if len(args) == 1 else await self._b64(args[1])
        if not isinstance(blob, bytes):
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Cannot split PLAIN credentials")
            return AuthResult(success=False, handled=True)
        return await self._login("PLAIN", parts[1], parts[2])

    async def auth_LOGIN(self, args: list[str]) -> AuthResult:
        if not await self._auth_allowed():
            return AuthResult(success=False, handled=True)
        login = await self.challenge_auth("Username:") if len(args) == 1 else await self._b64(args[1])
        if not isinstance(login, bytes):
            return AuthResult(success=False, handled=True)
        password = await self.challenge_auth("Password:")
        if not isinstance(password, bytes):
            return AuthResult(success=False, handled=True)
        return await self._login("LOGIN", login, password)


